using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the normalization family (Ir/Ops/NormalizationOps, the softmax ops): Softmax, LogSoftmax, LayerNormalization, BatchNormalization.</summary>
internal static class NormalizationKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        foreach (var (op, log) in new[] { ("Softmax", false), ("LogSoftmax", true) })
            d[op] = new(
                // Along the last axis every opset's Softmax is the same (older ones flatten from the axis on).
                c => c.In(0) is { Elem: DType.F32, Rank: > 0 } x && Axis(c.Node, x.Rank) == x.Rank - 1 ? null : "f32 along the last axis",
                c => c.Body.Line($"Kernels.ArenaKernels.Softmax({c.In(0)!.Span}, {c.Out(0)!.Span}, n: {c.In(0)!.Dims[^1]}, log: {(log ? "true" : "false")});"));
        d["BatchNormalization"] = BatchNorm();
        d["LayerNormalization"] = new(
            c =>
            {
                if (c.In(0) is not { Elem: DType.F32, Rank: > 0 } x) return "f32";
                if (c.Out(1) is not null || c.Out(2) is not null) return "only Y is wanted (not Mean or InvStdDev)";
                var row = x.Dims[Axis(c.Node, x.Rank)..];
                bool Fits(PlannedOperand? p) => p is null || p.Elem == DType.F32 && (p.Dims.SequenceEqual(row) || p.Dims.All(v => v == "1")
                    || p.Dims.SkipWhile(v => v == "1").SequenceEqual(row));
                return Fits(c.In(1)) && Fits(c.In(2)) ? null : "scale and bias of the normalized dims (or one element)";
            },
            c =>
            {
                var x = c.In(0)!;
                var n = PlannedOperand.CountOf(x.Dims[Axis(c.Node, x.Rank)..]);
                var bias = c.In(2)?.Span ?? "default";
                c.Body.Line($"Kernels.ArenaKernels.LayerNorm({x.Span}, {c.In(1)!.Span}, {bias}, {c.Out(0)!.Span}, n: {n}, epsilon: {CSharp.Float(c.Node.AttrFloat("epsilon"))});");
            });
    }

    /// <summary>Inference BatchNormalization with constant statistics (training_mode 0, only Y wanted).</summary>
    private static PlannedKernel BatchNorm() => new(
        c => c.In(0) is { Elem: DType.F32, Rank: >= 2 } && Enumerable.Range(1, 4).All(i => c.In(i) is { Elem: DType.F32, Storage: PlannedStorage.Constant })
            && c.Node.Attr<IntAttr>("training_mode")?.Value is null or 0 && c.Out(1) is null && c.Out(2) is null ? null : "f32 inference with constant statistics",
        c =>
        {
            var x = c.In(0)!;
            var inner = x.Rank == 2 ? "1" : PlannedOperand.CountOf(x.Dims[2..]);
            c.Body.Line($"Kernels.ArenaKernels.BatchNorm({x.Span}, n: {x.Dims[0]}, c: {x.Dims[1]}, inner: {inner}, {c.In(1)!.Span}, {c.In(2)!.Span}, {c.In(3)!.Span}, {c.In(4)!.Span}, epsilon: {CSharp.Float(c.Node.AttrFloat("epsilon"))}, {c.Out(0)!.Span});");
        }) { SeveralOutputs = true };

    /// <summary>The node's axis attribute, made non-negative.</summary>
    public static int Axis(Node n, int rank)
    {
        var axis = (int)n.AttrInt("axis");
        return axis < 0 ? axis + rank : axis;
    }
}
