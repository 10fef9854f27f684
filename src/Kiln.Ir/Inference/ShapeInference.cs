using Kiln.Ir.Diagnostics;
using Kiln.Ir.Ops;

namespace Kiln.Ir.Inference;

/// <summary>
/// Infers the type of every value from the graph inputs and constants, op by op, with symbolic dims. Small integer
/// tensors (shape arithmetic) are tracked by value so Shape → Gather → Concat → Reshape chains give exact shapes.
/// Declared types (ONNX value_info) fill in what a rule cannot know; declared output symbols get bound
/// (<c>total_seq = past_seq + seq</c>).
/// </summary>
public sealed class ShapeInference
{
    private readonly OpRegistry _registry;
    private readonly Dictionary<Value, SymbolicTensor?> _known = [];
    private readonly IReadOnlyDictionary<Value, IrType> _declared;
    private readonly HashSet<Value> _set = [];

    private ShapeInference(OpRegistry registry, IReadOnlyDictionary<Value, IrType>? declared)
    {
        _registry = registry;
        _declared = declared ?? new Dictionary<Value, IrType>();
    }

    /// <summary>Infers types in <paramref name="graph"/> and its subgraphs. <paramref name="declared"/> are types the source file gave for intermediate values.</summary>
    public static void Run(Graph graph, OpRegistry? registry = null, IReadOnlyDictionary<Value, IrType>? declared = null)
    {
        var engine = new ShapeInference(registry ?? OpRegistry.Default, declared);
        engine.InferGraph(graph);
    }

    /// <summary>
    /// Infers types like <see cref="Run"/> and returns the values whose elements inference knows (the results of
    /// shape arithmetic: Shape → Gather → Concat chains), as numbers or symbolic dims. Folding turns the concrete ones
    /// into constants; code generation computes the symbolic ones once per call.
    /// </summary>
    public static IReadOnlyDictionary<Value, SymbolicTensor> RunAndCollectKnown(Graph graph, OpRegistry? registry = null)
    {
        // Types already known (declared by the source file, or from earlier inference) are kept where inference finds less.
        var current = graph.AllGraphs().SelectMany(g => g.Nodes).SelectMany(n => n.Outputs).OfType<Value>()
            .Where(v => v.Type is not UnknownType).ToDictionary(v => v, v => v.Type);
        var engine = new ShapeInference(registry ?? OpRegistry.Default, current);
        engine.InferGraph(graph);
        return engine._known.Where(kv => kv.Value is not null).ToDictionary(kv => kv.Key, kv => kv.Value!);
    }

    private void InferGraph(Graph g)
    {
        foreach (var node in g.Nodes) InferNode(node);
        BindOutputs(g);
    }

    private void InferNode(Node node)
    {
        var def = _registry.Find(node.Domain, node.Op)
            ?? throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedOp, $"unsupported op {node.QualifiedOp}",
                NodeName: node.Name, NodeIndex: node.Owner.Nodes.IndexOf(node), Op: node.QualifiedOp));
        foreach (var o in node.Outputs) if (o is not null) _set.Remove(o);
        var ctx = new InferenceContext(this, node, def);
        try
        {
            def.Rule(ctx);
        }
        catch (UnknownInputTypeException)
        {
            // An input's type is unknown: outputs the rule did not set stay unknown.
        }
        foreach (var o in node.Outputs)
        {
            if (o is null) continue;
            if (!_set.Contains(o)) o.Type = IrType.Unknown;
            if (_declared.TryGetValue(o, out var d)) o.Type = Meet(o.Type, d);
        }
    }

    internal void SetType(Value v, IrType t)
    {
        v.Type = t;
        _set.Add(v);
    }

    internal void SetKnown(Value v, SymbolicTensor value) => _known[v] = value;

    internal SymbolicTensor? KnownValue(Value v)
    {
        if (_known.TryGetValue(v, out var k)) return k;
        SymbolicTensor? result = null;
        if (v.Kind == ValueKind.Constant && v.Data is { } data && data.ElementCount <= SymbolicTensor.MaxElements
            && (data.Elem.IsInteger() || data.Elem == DType.Bool) && data.Elem is not (DType.I4 or DType.U4))
            result = new SymbolicTensor(data.Elem, data.Dims, data.ToInt64Array().Select(Dim.Const).ToArray());
        _known[v] = result;
        return result;
    }

    internal IReadOnlyList<IrType> InferSubgraph(Graph g, IReadOnlyList<IrType?> inputTypes)
    {
        for (var i = 0; i < g.Inputs.Count && i < inputTypes.Count; i++)
            if (inputTypes[i] is { } t) g.Inputs[i].Type = Meet(t, g.Inputs[i].Type);
        InferGraph(g);
        return g.Outputs.Select(o => o.Value.Type).ToList();
    }

    /// <summary>Combines an inferred type with a declared one: inferred facts win, declared ones fill the gaps.</summary>
    public static IrType Meet(IrType inferred, IrType declared)
    {
        switch (inferred, declared)
        {
            case (UnknownType, _): return declared;
            case (_, UnknownType): return inferred;
            case (TensorType a, TensorType b):
                if (a.Shape is null) return a with { Shape = b.Shape };
                if (b.Shape is null || a.Shape.Rank != b.Shape.Rank) return a;
                return a with { Shape = new Shape(a.Shape.Dims.Zip(b.Shape.Dims, (x, y) => x.IsUnknown ? y : x)) };
            case (SequenceType a, SequenceType b): return new SequenceType(Meet(a.Element, b.Element));
            case (OptionalType a, OptionalType b): return new OptionalType(Meet(a.Element, b.Element));
            default: return inferred;
        }
    }

    /// <summary>Checks each output's computed type against its declared type, binding declared symbols to what was computed.</summary>
    private static void BindOutputs(Graph g)
    {
        g.Bindings.Clear();
        foreach (var output in g.Outputs)
        {
            var value = output.Value;
            if (value.Type is UnknownType)
            {
                value.Type = output.DeclaredType;
                continue;
            }
            if (value.Type is not TensorType actual || output.DeclaredType is not TensorType declared) continue;
            if (actual.Elem != declared.Elem)
                throw Mismatch(g, output, $"declared {declared.Elem.Name()} but the graph computes {actual.Elem.Name()}");
            if (actual.Shape is null || declared.Shape is null) continue;
            if (actual.Shape.Rank != declared.Shape.Rank)
                throw Mismatch(g, output, $"declared rank {declared.Shape.Rank} ({declared}) but the graph computes rank {actual.Shape.Rank} ({actual})");
            var dims = actual.Shape.Dims.ToArray();
            for (var i = 0; i < dims.Length; i++)
            {
                var d = declared.Shape[i];
                var a = dims[i];
                if (a.IsUnknown) { dims[i] = d; continue; }
                if (d.IsConstant && a.IsConstant && d.Value != a.Value)
                    throw Mismatch(g, output, $"dim {i} declared {d} but the graph computes {a}");
                if (d.SymbolName is { } sym && !a.Equals(d))
                {
                    if (g.Bindings.TryGetValue(sym, out var bound) && !bound.Equals(a))
                        throw Mismatch(g, output, $"symbol '{sym}' is bound to {bound} by an earlier output, but dim {i} here is {a}");
                    g.Bindings[sym] = a;
                }
            }
            value.Type = actual with { Shape = new Shape(dims) };
        }
    }

    private static KilnException Mismatch(Graph g, GraphOutput output, string message) =>
        new(new Diagnostic(DiagnosticCode.DeclaredTypeMismatch, $"graph '{g.Name}' output '{output.Name}': {message}"));
}
