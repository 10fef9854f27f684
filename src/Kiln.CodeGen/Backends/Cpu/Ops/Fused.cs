using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of Kiln's fused ops (Ir/Ops/FusedOps): RMSNorm, SiLU, rotary embedding, MatMul+Add, attention.</summary>
internal static class FusedKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d[KilnOp.Qualified.SiLU] = ElementwiseKernels.Unary("Kernels.Fused.Silu");
        d[KilnOp.Qualified.RmsNorm] = new(
            c => c.In(0)!.Elem == DType.F32 && c.In(0)!.Rank >= 1 ? null : "f32",
            c =>
            {
                var x = c.In(0)!;
                c.Body.Line($"Kernels.Fused.RmsNorm({x.Span}, {c.In(1)!.Span}, {c.Out(0)!.Span}, n: {x.Dims[^1]}, eps: {CSharp.Float(c.Node.AttrFloat("epsilon"))});");
            });
        d[KilnOp.Qualified.RotaryEmbedding] = new(
            c => c.In(0)!.Elem == DType.F32 && c.In(0)!.Rank >= 2 && Kiln.Runtime.Kernels.Fused.RotaryPositionAxis(c.In(0)!.Rank, c.In(1)!.Dims).Problem is null
                ? null : "f32 of rank ≥ 2, cos/sin varying along one axis",
            c =>
            {
                var x = c.In(0)!;
                // Positions run along the one axis where cos/sin are not 1; the rows after it share a position.
                var axis = Kiln.Runtime.Kernels.Fused.RotaryPositionAxis(x.Rank, c.In(1)!.Dims).Axis;
                var s = axis < 0 ? "1" : x.Dims[axis];
                var inner = axis < 0 || axis + 1 >= x.Rank - 1 ? "1" : "(" + string.Join(" * ", x.Dims[(axis + 1)..^1]) + ")";
                var interleaved = c.Node.AttrInt("interleaved") != 0 ? "true" : "false";
                c.Body.Line($"Kernels.ArenaKernels.Rotary({x.Span}, {c.In(1)!.Span}, {c.In(2)!.Span}, {c.Out(0)!.Span}, inner: {inner}, s: {s}, d: {x.Dims[^1]}, interleaved: {interleaved});");
            });
        d[KilnOp.Qualified.MatMulAdd] = new(MatMulKernels.WeightProduct, c =>
        {
            var (x, wt) = (c.In(0)!, c.In(1)!);
            var (k, nn) = (wt.Dims[0], wt.Dims[1]);
            var act = c.Node.AttrString("activation");
            c.Body.Line($"Kernels.ArenaKernels.MatMulAdd({x.Span}, {wt.Span}, {wt.WeightField}, {c.In(2)!.Span}, {c.Out(0)!.Span}, m: {MatMulKernels.Rows(x, k)}, n: {nn}, k: {k}, activation: {CSharp.String(act)});");
        });
        d[KilnOp.Qualified.GroupQueryAttention] = new(
            c =>
            {
                var x = c.In(0)!;
                if (x.Elem != DType.F32 || x.Rank != 4) return "f32 rank-4 Q";
                if (c.In(3) is { } mask && (mask.Rank < 2 || mask.Dims.Take(mask.Rank - 2).Any(dim => dim != "1"))) return "a mask of [s, t] (leading dims 1)";
                return null;
            },
            EmitAttention);
    }

    private static void EmitAttention(PlannedNodeContext c)
    {
        var (w, x, k, v, y) = (c.Body, c.In(0)!, c.In(1)!, c.In(2)!, c.Out(0)!);
        var scale = CSharp.Float(c.Node.Attr<FloatAttr>("scale")!.Value);
        var mask = c.In(3);
        var strides = "default, 0, 0, 0, 0";
        if (mask is not null)
        {
            string rows = mask.Dims[^2], cols = mask.Dims[^1];
            strides = $"{mask.Span}, 0, 0, ({rows} == 1 ? 0 : {cols}), ({cols} == 1 ? 0 : 1)";
        }
        var headStride = k.HeadStride ?? $"{k.Dims[2]} * {k.Dims[3]}";
        var dims = $"b: {x.Dims[0]}, h: {x.Dims[1]}, s: {x.Dims[2]}, d: {x.Dims[3]}, kvh: {k.Dims[1]}, t: {k.Dims[2]}";
        if (k.KvScales is { } keyScales && v.KvScales is { } valueScales)
            w.Line($"Kernels.ArenaKernels.AttentionInt8({x.Span}, {k.Span}, {keyScales}, {v.Span}, {valueScales}, {strides}, {y.Span}, {dims}, capacity: cache.Capacity, scale: {scale});");
        else if (c.Node.Attr<IntAttr>("kv_bits")?.Value == 8)
            w.Line($"Kernels.ArenaKernels.AttentionRoundedKv({x.Span}, {k.Span}, {v.Span}, {strides}, {y.Span}, {dims}, kvStride: {headStride}, scale: {scale});");
        else
            w.Line($"Kernels.ArenaKernels.Attention({x.Span}, {k.Span}, {v.Span}, {strides}, {y.Span}, {dims}, kvStride: {headStride}, scale: {scale});");
    }
}
