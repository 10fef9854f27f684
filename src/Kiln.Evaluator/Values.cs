using Kiln.Ir;
using Kiln.Ir.Ops;
using Kiln.Runtime;
using Kiln.Runtime.Operators;

namespace Kiln.Evaluator;

/// <summary>Conversions between Kiln.Ir's element types and constants and the runtime's.</summary>
public static class RuntimeTypes
{
    /// <summary>The enums share their order (checked by a test), so this is a cast.</summary>
    public static DType ToRuntime(this DType t) => t;

    public static DType ToIr(this DType t) => t;

    /// <summary>A tensor over the constant's bytes (no copy; mapped weights stay mapped).</summary>
    public static Tensor ToTensor(this TensorData data, bool persistent = false)
    {
        var shape = data.Dims.Select(d => checked((int)d)).ToArray();
        if (data is StringTensorData s) return Tensor.FromStrings(shape, s.AsStrings.ToArray());
        if (data.Elem is DType.I4 or DType.U4 or DType.C64 or DType.C128)
            throw new KernelException($"{data.Elem.Name()} tensors are not supported by the evaluator");
        return Tensor.Wrap(data.Elem.ToRuntime(), shape, System.Runtime.InteropServices.MemoryMarshal.AsMemory(data.Memory), persistent);
    }

    /// <summary>
    /// An op's attributes in the runtime's form, the op's defaults filled in; subgraphs become <see cref="Subgraph"/>s
    /// that call <paramref name="runSubgraph"/>.
    /// </summary>
    public static OpAttributes ToRuntime(this Node node, Func<Graph, IReadOnlyList<object?>, object?[]>? runSubgraph)
    {
        var a = new OpAttributes();
        foreach (var (name, value) in node.Attributes)
            if (Convert(value, runSubgraph) is { } v) a.Set(name, v);
        if (OpRegistry.Default.Find(node.Domain, node.Op) is { } def)
            foreach (var d in def.Attributes)
                if (d.Default is { } dv && Convert(dv, runSubgraph) is { } v) a.Default(d.Name, v);
        return a;
    }

    private static object? Convert(AttrValue value, Func<Graph, IReadOnlyList<object?>, object?[]>? runSubgraph) => value switch
    {
        IntAttr i => i.Value,
        FloatAttr f => f.Value,
        StringAttr s => s.Value,
        IntsAttr i => i.Value,
        FloatsAttr f => f.Value,
        StringsAttr s => s.Value,
        TensorAttr t => t.Value.ToTensor(),
        GraphAttr g when runSubgraph is not null => ToSubgraph(g.Value, inputs => runSubgraph(g.Value, inputs)),
        _ => null,
    };

    /// <summary>A subgraph's runtime descriptor: the runner and its outputs' declared element types and static dims (unknown dims as 0).</summary>
    public static Subgraph ToSubgraph(Graph g, Func<IReadOnlyList<object?>, object?[]> run) =>
        new(g.Name, run,
            g.Outputs.Select(o => o.Value.Type is TensorType tt ? tt.Elem.ToRuntime() : (DType?)null).ToList(),
            g.Outputs.Select(o => o.Value.Type is TensorType { Shape: { } s } ? s.Dims.Select(d => (int)(d.Value ?? 0)).ToArray() : null).ToList());

    /// <summary>A copy of the tensor as IR tensor data (for writing files and comparing).</summary>
    public static TensorData ToTensorData(this Tensor t)
    {
        var dims = t.Shape.Select(d => (long)d).ToArray();
        if (t.Type == DType.String) return new StringTensorData(dims, t.Strings.Select(x => System.Text.Encoding.UTF8.GetBytes(x)).ToArray());
        return new MemoryTensorData(t.Type.ToIr(), dims, t.Bytes.ToArray());
    }
}
