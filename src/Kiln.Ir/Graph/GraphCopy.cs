namespace Kiln.Ir;

/// <summary>
/// Copies of a model's graph: fresh values, nodes and subgraphs with the same names, types and attributes, sharing the
/// constants' tensor data (never written in place: passes replace constants rather than edit them). A pass that needs
/// the model as it was (reconstruct's teacher) keeps such a copy while later passes rewrite the original.
/// </summary>
public static class GraphCopy
{
    /// <summary>A copy of <paramref name="model"/>; its mapped files stay owned by the original, which must outlive the copy.</summary>
    public static Model Copy(Model model)
    {
        var copy = new Model(Copy(model.Graph, null, []))
        {
            IrVersion = model.IrVersion,
            ProducerName = model.ProducerName,
            ProducerVersion = model.ProducerVersion,
            Domain = model.Domain,
            ModelVersion = model.ModelVersion,
            SourcePath = model.SourcePath,
        };
        foreach (var (domain, version) in model.OpsetImports) copy.OpsetImports[domain] = version;
        copy.Metadata.AddRange(model.Metadata);
        return copy;
    }

    /// <param name="map">every value in scope so far (enclosing graphs' too), original to copy</param>
    private static Graph Copy(Graph g, Graph? parent, Dictionary<Value, Value> map)
    {
        var c = new Graph(g.Name, parent);
        foreach (var input in g.Inputs)
        {
            var copy = c.AddInput(input.Name, input.Type);
            copy.Data = input.Data;
            map[input] = copy;
        }
        foreach (var constant in g.Constants) map[constant] = c.AddConstant(constant.Name, constant.Data!);
        foreach (var n in g.Nodes)
        {
            var attributes = new Dictionary<string, AttrValue>();
            foreach (var (name, value) in n.Attributes)
                attributes[name] = value switch
                {
                    GraphAttr sub => new GraphAttr(Copy(sub.Value, c, map)),
                    GraphsAttr subs => new GraphsAttr(subs.Value.Select(s => Copy(s, c, map)).ToArray()),
                    _ => value,
                };
            var node = c.AddNode(n.Op, n.Domain, n.Name, n.Inputs.Select(v => v is null ? null : map[v]).ToArray(),
                n.Outputs.Select(o => o?.Name).ToList(), attributes, n.Outputs.Select(o => o?.Type ?? IrType.Unknown).ToList());
            for (var i = 0; i < n.Outputs.Length; i++)
                if (n.Outputs[i] is { } o) map[o] = node.Outputs[i]!;
        }
        foreach (var o in g.Outputs) c.Outputs.Add(new GraphOutput(o.Name, map[o.Value], o.DeclaredType));
        foreach (var (symbol, dim) in g.Bindings) c.Bindings[symbol] = dim;
        return c;
    }
}
