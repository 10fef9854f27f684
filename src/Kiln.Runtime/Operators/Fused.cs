using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

public static partial class OperatorTable
{
    /// <summary>Kiln's fused ops (domain kiln), produced by the fuse pass.</summary>
    private static void RegisterFused(Dictionary<string, Action<OpContext>> d)
    {
        d[KilnOp.Qualified.RmsNorm] = c => c.Set(0, Fused.RmsNorm(c.In(0), c.In(1), c.Float("epsilon")));
        d[KilnOp.Qualified.SiLU] = c => c.Set(0, Fused.Silu(c.In(0)));
        d[KilnOp.Qualified.Gelu] = c => c.Set(0, Fused.Gelu(c.In(0), c.Str("approximate") == "tanh"));
        d[KilnOp.Qualified.RotaryEmbedding] = c => c.Set(0, Fused.Rotary(c.In(0), c.In(1), c.In(2), c.Int("interleaved") != 0));
        d[KilnOp.Qualified.GroupQueryAttention] = c => c.Set(0, Fused.GroupQueryAttention(c.In(0), c.In(1), c.In(2), c.Opt(3), c.Float("scale"), (int)c.Int("kv_bits")));
        d[KilnOp.Qualified.MatMulAdd] = c => c.Set(0, Fused.MatMulAdd(c.In(0), c.In(1), c.In(2), c.Str("activation")));
        d[KilnOp.Qualified.QuantizedMatMul] = c => c.Set(0, QuantizedOps.MatMul(c.In(0), QuantizedOps.Matrix(c, 1), c.Opt(4), c.Str("activation"), (int)c.Int("activation_bits"), c.Opt(5)));
        d[KilnOp.Qualified.QuantizedGather] = c => c.Set(0, QuantizedOps.Gather(QuantizedOps.Matrix(c, 0), c.In(3)));
        d[KilnOp.Qualified.SparseMatMul] = c => c.Set(0, SparseOps.MatMul(c.In(0), SparseOps.Matrix(c, 1), c.Opt(4), c.Str("activation")));
        d[KilnOp.Qualified.ConvActivation] = c =>
        {
            var x = c.In(0);
            var w = c.In(1);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad"));
            c.Set(0, Fused.ConvActivation(x, w, c.Opt(2), win, (int)c.Int("group"), c.Str("activation"), c.Floats("activation_params") ?? []));
        };
    }
}
