using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the MatMul family (Ir/Ops/MatMulOps): f32 activations times a constant 2-D weight.</summary>
internal static class MatMulKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["MatMul"] = new(WeightProduct, c =>
        {
            var (x, wt, y) = (c.In(0)!, c.In(1)!, c.Out(0)!);
            var (k, nn) = (wt.Dims[0], wt.Dims[1]);
            var last = LastRows(c, x, wt, y, k, nn, transB: false);
            c.Body.Line($"Kiln.Runtime.Kernels.MatMul.Gemm({x.Span}, {k}, false, {wt.Span}, {nn}, false, {y.Span}, {nn}, {x.Count} / {k}, {nn}, {k}, false, {wt.WeightField}, 0);");
            if (last) c.Body.Close();
        }) { LastRowsOnly = _ => true };
        d["Gemm"] = new(
            c =>
            {
                var (n, x) = (c.Node, c.In(0)!);
                return x.Elem == ElementType.F32 && x.Rank == 2 && c.In(1) is { Storage: PlannedStorage.Constant, Rank: 2 }
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
                    w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Binary<float, Kiln.Runtime.Kernels.AddOp<float>>({y.Span}, {y.Shape}, {bias.Span}, {bias.Shape}, {y.Span}, {y.Shape});");
                    accumulate = "true";
                }
                w.Line($"Kiln.Runtime.Kernels.MatMul.Gemm({x.Span}, {k}, false, {wt.Span}, {wt.Dims[1]}, {(transB ? "true" : "false")}, {y.Span}, {nn}, {x.Dims[0]}, {nn}, {k}, {accumulate}, {wt.WeightField}, 0);");
                if (lastRows) w.Close();
            }) { LastRowsOnly = c => c.In(2) is null };
    }

    /// <summary>The check shared by products with a weight: f32 activations of rank ≥ 2 times a constant 2-D weight.</summary>
    public static string? WeightProduct(PlannedNodeContext c) =>
        c.In(0)!.Elem == ElementType.F32 && c.In(0)!.Rank >= 2 && c.In(1) is { Storage: PlannedStorage.Constant, Rank: 2 } ? null : "f32 activations times a 2-D weight";

    /// <summary>For a step's logits: when only last positions are wanted, one row product per batch row; else (returns true: the caller closes the block) the full product.</summary>
    private static bool LastRows(PlannedNodeContext c, PlannedOperand x, PlannedOperand wt, PlannedOperand y, string k, string n, bool transB)
    {
        if (c.LastRowsOnly is not { } condition) return false;
        c.Body.Open($"if ({condition})");
        c.Body.Line($"for (var row = 0; row < batch; row++) Kiln.Runtime.Kernels.MatMul.Gemm({x.Span}.Slice((row * seq + seq - 1) * {k}, {k}), {k}, false, {wt.Span}, {wt.Dims[1]}, {(transB ? "true" : "false")}, {y.Span}.Slice(row * {n}, {n}), {n}, 1, {n}, {k}, false, {wt.WeightField}, 0);");
        c.Body.Close();
        c.Body.Open("else");
        return true;
    }
}
