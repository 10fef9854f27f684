using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>
/// Planned CPU kernels of the reduction family (Ir/Ops/ReductionOps): ReduceSum, ReduceMean, ReduceMax, ReduceMin
/// of f32 over contiguous axes given as constants (LayerNorm written out as ReduceMean/Sub/Pow/Sqrt/Div, a
/// squeeze-excite block's spatial mean).
/// </summary>
internal static class ReductionKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        foreach (var (op, kind) in new[] { ("ReduceSum", "Sum"), ("ReduceMean", "Mean"), ("ReduceMax", "Max"), ("ReduceMin", "Min") })
            d[op] = new(
                c => c.In(0) is { Elem: DType.F32, Rank: > 0 } x && Axes(c, x.Rank) is not null ? null : "f32 over contiguous constant axes",
                c =>
                {
                    var x = c.In(0)!;
                    var (first, end) = Axes(c, x.Rank)!.Value;
                    string Product(IEnumerable<string> dims) => dims.Any() ? "(" + string.Join(" * ", dims) + ")" : "1";
                    c.Body.Line($"Kernels.ArenaKernels.Reduce({x.Span}, {c.Out(0)!.Span}, outer: {Product(x.Dims[..first])}, r: {Product(x.Dims[first..end])}, inner: {Product(x.Dims[end..])}, Kernels.ReduceKind.{kind});");
                });
    }

    /// <summary>The reduced axes as one run [first, end): the constant axes input (none: every axis), or null.</summary>
    private static (int First, int End)? Axes(PlannedNodeContext c, int rank)
    {
        long[] axes;
        if (c.In(1) is { } a)
        {
            if (a.Value.Data is not { } data) return null;
            axes = data.ToInt64Array();
        }
        else axes = [];
        if (axes.Length == 0)
        {
            // No axes: every axis, unless noop_with_empty_axes makes the node an identity (the operator entry's job).
            return c.Node.AttrInt("noop_with_empty_axes") != 0 ? null : (0, rank);
        }
        var sorted = axes.Select(v => (int)(v < 0 ? v + rank : v)).Distinct().Order().ToArray();
        if (sorted[0] < 0 || sorted[^1] >= rank || sorted[^1] - sorted[0] + 1 != sorted.Length) return null;
        return (sorted[0], sorted[^1] + 1);
    }
}
