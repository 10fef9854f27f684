using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>Small helpers the fusion patterns share: reading producers, constants and uses, and splicing in a fused node.</summary>
internal static class Matching
{
    /// <summary>The node producing <paramref name="v"/> when it is an ONNX op of that name.</summary>
    public static Node? From(Value? v, string op) => v?.Producer is { } n && n.Op == op && n.Domain.Length == 0 ? n : null;

    /// <summary>The node producing <paramref name="v"/> when it is a Kiln fused op of that name.</summary>
    public static Node? FromKiln(Value? v, string op) => v?.Producer is { } n && n.Op == op && n.Domain == KilnOp.Domain ? n : null;

    public static bool Is(Node n, string op) => n.Op == op && n.Domain.Length == 0;

    /// <summary>Used once, by a node (not a graph output): a chain may fold it away.</summary>
    public static bool Private(Value v) => v.Uses.Count == 1 && !v.Owner.Outputs.Any(o => o.Value == v);

    /// <summary>The value of a constant holding one number.</summary>
    public static double? Scalar(Value? v) =>
        v is { Kind: ValueKind.Constant, Data: { ElementCount: 1 } d } && d.Elem is DType.F32 or DType.F64 or DType.I64 or DType.I32
            ? d.Elem switch
            {
                DType.F32 => d.ToArray<float>()[0],
                DType.F64 => d.ToArray<double>()[0],
                _ => d.ToInt64Array()[0],
            }
            : null;

    public static bool IsScalar(Value? v, double x, double tolerance = 1e-6) => Scalar(v) is { } s && Math.Abs(s - x) <= tolerance * Math.Max(1, Math.Abs(x));

    public static long[]? Ints(Value? v) => v is { Kind: ValueKind.Constant, Data: { } d } && d.Elem is DType.I64 or DType.I32 ? d.ToInt64Array() : null;

    /// <summary>The operand of a two-input node that is not <paramref name="known"/> (null when neither or both are).</summary>
    public static Value? Other(Node n, Value known) =>
        n.Inputs.Count == 2 ? (n.Inputs[0] == known && n.Inputs[1] != known ? n.Inputs[1] : n.Inputs[1] == known && n.Inputs[0] != known ? n.Inputs[0] : null) : null;

    /// <summary>For a commutative two-input node, the operand produced by <paramref name="op"/> and the other one.</summary>
    public static (Node Match, Value Other)? Operand(Node n, string op)
    {
        if (n.Inputs.Count != 2 || n.Inputs[0] is not { } a || n.Inputs[1] is not { } b) return null;
        if (From(a, op) is { } x) return (x, b);
        if (From(b, op) is { } y) return (y, a);
        return null;
    }

    /// <summary>A value a fused node may take over: not a graph output (outputs keep their names and producers).</summary>
    public static bool Replaceable(Value v) => !v.Owner.Outputs.Any(o => o.Value == v);

    public static int? Rank(Value? v) => v?.TensorType?.Shape?.Rank;

    public static bool IsF32(Value? v) => v?.TensorType?.Elem == DType.F32;

    /// <summary>Whether two values provably have the same shape.</summary>
    public static bool SameShape(Value a, Value b) =>
        a.TensorType?.Shape is { } x && b.TensorType?.Shape is { } y && x.Rank == y.Rank && x.Dims.Zip(y.Dims).All(p => p.First.SameAs(p.Second));

    /// <summary>
    /// Adds a fused node computing what <paramref name="replaced"/> held, right after <paramref name="anchor"/>, and
    /// points every use of <paramref name="replaced"/> at it. The chain it replaces dies and the pass removes it.
    /// </summary>
    public static Node Replace(Graph g, Node anchor, Value replaced, string domain, string op, Value?[] inputs, Dictionary<string, AttrValue>? attributes = null)
    {
        var scope = anchor.Name is { } n && n.LastIndexOf('/') is var slash and > 0 ? n[..(slash + 1)] : "";
        var name = scope + op;
        for (var k = 2; g.Nodes.Any(x => x.Name == name); k++) name = scope + op + "_" + k;
        var output = name + "_output_0";
        for (var k = 2; g.Lookup(output) is not null; k++) output = name + "_output_" + k;
        var node = g.AddNode(op, domain, name, inputs, [output], attributes, [replaced.Type]);
        g.Nodes.Remove(node);
        g.Nodes.Insert(g.Nodes.IndexOf(anchor) + 1, node);
        Graph.ReplaceAllUses(replaced, node.Outputs[0]!);
        return node;
    }
}
