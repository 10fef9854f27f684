using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the MatMul family (Ir/Ops/MatMulOps): f32 activations times a constant 2-D weight, or two activations.</summary>
internal static class MatMulKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["MatMul"] = new(c => WeightProduct(c) is null || ActivationProduct(c) ? null : "f32 activations times a 2-D weight or another activation (ranks ≥ 2)", c =>
        {
            if (WeightProduct(c) is not null)
            {
                var (a, b, r) = (c.In(0)!, c.In(1)!, c.Out(0)!);
                c.Body.Line($"Kernels.ArenaKernels.BatchedMatMul({a.Span}, {a.Shape}, {b.Span}, {b.Shape}, {r.Span}, {r.Shape});");
                return;
            }
            var (x, wt, y) = (c.In(0)!, c.In(1)!, c.Out(0)!);
            var (k, nn) = (wt.Dims[0], wt.Dims[1]);
            var last = LastRows(c, x, wt, y, k, nn, transB: false);
            c.Body.Line($"Kernels.MatMul.Gemm({x.Span}, lda: {k}, transA: false, {wt.Span}, ldb: {nn}, transB: false, {y.Span}, ldc: {nn}, m: {Rows(x, k)}, n: {nn}, k: {k}, accumulate: false, {wt.WeightField}, weightsOffset: 0);");
            if (last) c.Body.Close();
        }) { LastRowsOnly = c => WeightProduct(c) is null };
        d["Gemm"] = new(
            c =>
            {
                var (n, x) = (c.Node, c.In(0)!);
                return x.Elem == DType.F32 && x.Rank == 2 && c.In(1) is { Storage: PlannedStorage.Constant, Rank: 2 }
                    && n.AttrInt("transA") == 0 && n.AttrFloat("alpha") == 1f && n.AttrFloat("beta") == 1f
                    ? null : "A·op(W) (+ C) with alpha = beta = 1";
            },
            c =>
            {
                var (w, x, wt, y) = (c.Body, c.In(0)!, c.In(1)!, c.Out(0)!);
                var transB = c.Node.AttrInt("transB") != 0;
                var (k, nn) = transB ? (wt.Dims[1], wt.Dims[0]) : (wt.Dims[0], wt.Dims[1]);
                var accumulate = "false";
                var lastRows = LastRows(c, x, wt, y, k, nn, transB);
                if (c.In(2) is { } bias)
                {
                    // C is broadcast into Y first (zeros + C), then the product accumulates onto it.
                    w.Line($"{y.Span}.Clear();");
                    w.Line($"Kernels.ArenaKernels.Binary<float, Kernels.AddOp<float>>({y.Span}, {y.Shape}, {bias.Span}, {bias.Shape}, {y.Span}, {y.Shape});");
                    accumulate = "true";
                }
                w.Line($"Kernels.MatMul.Gemm({x.Span}, lda: {k}, transA: false, {wt.Span}, ldb: {wt.Dims[1]}, transB: {(transB ? "true" : "false")}, {y.Span}, ldc: {nn}, m: {x.Dims[0]}, n: {nn}, k: {k}, accumulate: {accumulate}, {wt.WeightField}, weightsOffset: 0);");
                if (lastRows) w.Close();
            }) { LastRowsOnly = c => c.In(2) is null };
    }

    /// <summary>Two f32 operands of rank ≥ 2 (batch dims broadcast): attention's scores and context when not fused.</summary>
    private static bool ActivationProduct(PlannedNodeContext c) =>
        c.In(0) is { Elem: DType.F32, Rank: >= 2 and <= 8 } && c.In(1) is { Elem: DType.F32, Rank: >= 2 and <= 8 } && c.Out(0)!.Rank <= 8;

    /// <summary>The rows of a product's input: the dims before the last (its last is k).</summary>
    public static string Rows(PlannedOperand x, string k) =>
        x.Dims[^1] == k ? (x.Rank == 1 ? "1" : string.Join(" * ", x.Dims[..^1])) : $"{x.Count} / {k}";

    /// <summary>The check shared by products with a weight: f32 activations of rank ≥ 2 times a constant 2-D weight.</summary>
    public static string? WeightProduct(PlannedNodeContext c) =>
        c.In(0)!.Elem == DType.F32 && c.In(0)!.Rank >= 2 && c.In(1) is { Storage: PlannedStorage.Constant, Rank: 2 } ? null : "f32 activations times a 2-D weight";

    /// <summary>For a step's logits: when only last positions are wanted, one row product per batch row; else (returns true: the caller closes the block) the full product.</summary>
    private static bool LastRows(PlannedNodeContext c, PlannedOperand x, PlannedOperand wt, PlannedOperand y, string k, string n, bool transB)
    {
        if (c.LastRowsOnly is not { } condition) return false;
        c.Body.Open($"if ({condition})");
        c.Body.Line($"for (var row = 0; row < batch; row++) Kernels.MatMul.Gemm({x.Span}.Slice((row * seq + seq - 1) * {k}, {k}), lda: {k}, transA: false, {wt.Span}, ldb: {wt.Dims[1]}, transB: {(transB ? "true" : "false")}, {y.Span}.Slice(row * {n}, {n}), ldc: {n}, m: 1, n: {n}, k: {k}, accumulate: false, {wt.WeightField}, weightsOffset: 0);");
        c.Body.Close();
        c.Body.Open("else");
        return true;
    }
}
