using System.Globalization;
using System.Text;
using Kiln.Ir;

namespace Kiln.Passes;

/// <summary>
/// <c>cse</c>: merges equal computations. Two nodes with the same op, the same attributes and the same inputs
/// compute the same values, so uses of the later one's outputs move to the earlier one (exporters repeat
/// Shape/Gather chains per layer, and a whole model's attention masks from one input). Equal constants (same type,
/// shape and bytes) are merged too. Random ops and nodes with subgraphs are left alone.
/// </summary>
public sealed class CommonSubexpressionElimination : IPass
{
    public string Name => "cse";

    public string Summary => "merge equal nodes and equal constants";

    public IReadOnlyList<string> OptionNames => [];

    public void Run(PassContext ctx)
    {
        var outputs = ctx.Graph.AllGraphs().SelectMany(g => g.Outputs).Select(o => o.Value).ToHashSet();
        foreach (var g in ctx.Graph.AllGraphs().ToList())
        {
            MergeConstants(g, outputs, ctx);
            var seen = new Dictionary<string, Node>(StringComparer.Ordinal);
            var ids = new Dictionary<Value, int>(ReferenceEqualityComparer.Instance);
            foreach (var node in g.Nodes.ToList())
            {
                if (node.Subgraphs.Any() || node.Op.StartsWith("Random", StringComparison.Ordinal) || node.Op is "Multinomial" or "Bernoulli") continue;
                var key = Key(node, ids);
                if (!seen.TryGetValue(key, out var first)) { seen[key] = node; continue; }
                // Graph outputs keep their own producer: a graph's outputs are distinct values by name.
                if (node.Outputs.Any(o => o is not null && outputs.Contains(o))) continue;
                if (node.Outputs.Where((o, k) => o is not null && first.Outputs[k] is null).Any()) continue;
                for (var k = 0; k < node.Outputs.Length; k++)
                    if (node.Outputs[k] is { } o) Graph.ReplaceAllUses(o, first.Outputs[k]!);
                g.RemoveNode(node);
                ctx.Count("nodes");
            }
        }
    }

    private static void MergeConstants(Graph g, HashSet<Value> outputs, PassContext ctx)
    {
        // Hash only constants that share type and shape with another, so large distinct weights are not hashed for nothing.
        foreach (var group in g.Constants.Where(c => c.Data is not null && c.Data.Elem != DType.String && !outputs.Contains(c))
                     .GroupBy(c => c.Data!.Type.ToString()).Where(gr => gr.Count() > 1).ToList())
        {
            var byHash = new Dictionary<string, Value>(StringComparer.Ordinal);
            foreach (var c in group)
            {
                var hash = c.Data!.ContentHash;
                // Hashing read the whole weight: a model larger than memory must not keep every page resident.
                c.Data.ReleaseResident();
                if (!byHash.TryGetValue(hash, out var first)) { byHash[hash] = c; continue; }
                if (!c.Data.Bytes.SequenceEqual(first.Data!.Bytes)) continue;
                Graph.ReplaceAllUses(c, first);
                g.RemoveConstant(c);
                ctx.Count("constants");
            }
        }
    }

    private static string Key(Node n, Dictionary<Value, int> ids)
    {
        var sb = new StringBuilder();
        sb.Append(n.QualifiedOp).Append('(');
        foreach (var v in n.Inputs) sb.Append(v is null ? "_" : Id(v, ids)).Append(',');
        sb.Append(")#").Append(n.Outputs.Length).Append('{');
        foreach (var (name, a) in n.Attributes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            sb.Append(name).Append('=').Append(AttrKey(a)).Append(';');
        return sb.Append('}').ToString();
    }

    // Values are compared by identity.
    private static string Id(Value v, Dictionary<Value, int> ids)
    {
        if (!ids.TryGetValue(v, out var id)) ids[v] = id = ids.Count;
        return id.ToString(CultureInfo.InvariantCulture);
    }

    private static string AttrKey(AttrValue a) => a switch
    {
        IntAttr i => "i" + i.Value.ToString(CultureInfo.InvariantCulture),
        FloatAttr f => "f" + BitConverter.SingleToInt32Bits(f.Value).ToString(CultureInfo.InvariantCulture),
        StringAttr s => "s" + s.Value.Length + ":" + s.Value,
        IntsAttr i => "I[" + string.Join(",", i.Value) + "]",
        FloatsAttr f => "F[" + string.Join(",", f.Value.Select(BitConverter.SingleToInt32Bits)) + "]",
        StringsAttr s => "S[" + string.Join(",", s.Value.Select(x => x.Length + ":" + x)) + "]",
        TensorAttr t => "t" + t.Value.Type + (t.Value.Elem == DType.String ? string.Join(",", ((StringTensorData)t.Value).AsStrings) : t.Value.ContentHash),
        TypeAttr t => "T" + t.Value,
        _ => "?" + a.GetHashCode().ToString(CultureInfo.InvariantCulture),
    };
}
