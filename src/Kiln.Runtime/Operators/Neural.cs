using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;

namespace Kiln.Runtime.Operators;

public static partial class OperatorTable
{
    private static void RegisterNeural(Dictionary<string, Action<OpContext>> d)
    {
        d["MatMul"] = c => c.Set(0, MatMulAny(c.In(0), c.In(1)));
        d["Gemm"] = c =>
        {
            var a = c.In(0);
            var b = c.In(1);
            bool ta = c.Int("transA") != 0, tb = c.Int("transB") != 0;
            float alpha = c.Float("alpha", 1f), beta = c.Float("beta", 1f);
            if (a.Type != DType.F32)
            {
                var at = ta ? Movement.Transpose(a, [1, 0]) : a;
                var bt = tb ? Movement.Transpose(b, [1, 0]) : b;
                var p = MatMulAny(at, bt);
                if (alpha != 1) p = E.Numeric<E.MulOp>(p, Cast.To(Tensor.Scalar(alpha), p.Type));
                if (c.Opt(2) is { } cc && beta != 0) p = E.Numeric<E.AddOp>(p, beta == 1 ? cc : E.Numeric<E.MulOp>(cc, Cast.To(Tensor.Scalar(beta), p.Type)));
                c.Set(0, p);
                return;
            }
            int m = ta ? a.Shape[1] : a.Shape[0], k = ta ? a.Shape[0] : a.Shape[1], n = tb ? b.Shape[0] : b.Shape[1];
            if ((tb ? b.Shape[1] : b.Shape[0]) != k) throw new KernelException($"Gemm inner dimensions differ: {a} (transA={(ta ? 1 : 0)}) × {b} (transB={(tb ? 1 : 0)})");
            var r = Tensor.Zeros(DType.F32, [m, n]);
            var accumulate = false;
            if (c.Opt(2) is { } bias && beta != 0)
            {
                var bb = Movement.Expand(bias, [m, n]);
                var src = bb.Span<float>();
                var dst = r.Span<float>();
                for (var i = 0; i < dst.Length; i++) dst[i] = beta * src[i] / (alpha == 0 ? 1 : alpha);
                accumulate = alpha != 0;
                if (alpha == 0) { for (var i = 0; i < dst.Length; i++) dst[i] = beta * src[i]; c.Set(0, r); return; }
            }
            MatMul.Gemm(a.Span<float>(), a.Shape[1], ta, b.Span<float>(), b.Shape[1], tb, r.Span<float>(), n, m, n, k, accumulate, b, 0);
            if (alpha != 1) System.Numerics.Tensors.TensorPrimitives.Multiply(r.Span<float>(), alpha, r.Span<float>());
            c.Set(0, r);
        };
        d["Conv"] = c =>
        {
            var x = c.In(0);
            var w = c.In(1);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad", "NOTSET"));
            c.Set(0, Convolution.Conv(x, w, c.Opt(2), win, (int)c.Int("group", 1)));
        };
        d["ConvTranspose"] = c =>
        {
            var x = c.In(0);
            var w = c.In(1);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            c.Set(0, Convolution.ConvTranspose(x, w, c.Opt(2), kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"),
                c.Str("auto_pad", "NOTSET"), c.Ints("output_padding"), c.Ints("output_shape"), (int)c.Int("group", 1)));
        };
        void P(string name, PoolKind kind) => d[name] = c =>
        {
            var x = c.In(0);
            var kernel = c.Ints("kernel_shape")!.Select(v => (int)v).ToArray();
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad", "NOTSET"), c.Int("ceil_mode") != 0);
            var (y, idx) = Pool.Run(x, win, kind, c.Int("count_include_pad") != 0, (int)c.Int("p", 2), c.WantsOutput(1), (int)c.Int("storage_order"));
            c.Set(0, y);
            if (c.WantsOutput(1)) c.Set(1, idx);
        };
        P("MaxPool", PoolKind.Max);
        P("AveragePool", PoolKind.Average);
        P("LpPool", PoolKind.Lp);
        d["GlobalMaxPool"] = c => c.Set(0, Pool.Global(c.In(0), PoolKind.Max, 2));
        d["GlobalAveragePool"] = c => c.Set(0, Pool.Global(c.In(0), PoolKind.Average, 2));
        d["GlobalLpPool"] = c => c.Set(0, Pool.Global(c.In(0), PoolKind.Lp, (int)c.Int("p", 2)));
        d["BatchNormalization"] = c =>
        {
            var x = c.In(0);
            var eps = c.Float("epsilon", 1e-5f);
            var scale = c.In(1).ToDoubles();
            var bias = c.In(2).ToDoubles();
            var mean = c.In(3).ToDoubles();
            var var = c.In(4).ToDoubles();
            if (c.Int("training_mode") != 0)
            {
                var (bm, bv) = Normalization.ChannelStats(x);
                var momentum = c.Float("momentum", 0.9f);
                c.Set(0, Normalization.ChannelAffine(x, bm, bv, scale, bias, eps));
                if (c.WantsOutput(1)) c.Set(1, Movement.FromDoubles(c.In(3).Type, c.In(3).Shape, mean.Select((m, i) => m * momentum + bm[i] * (1 - momentum)).ToArray()));
                if (c.WantsOutput(2)) c.Set(2, Movement.FromDoubles(c.In(4).Type, c.In(4).Shape, var.Select((v, i) => v * momentum + bv[i] * (1 - momentum)).ToArray()));
                return;
            }
            c.Set(0, Normalization.ChannelAffine(x, mean, var, scale, bias, eps));
        };
        d["InstanceNormalization"] = c =>
        {
            var x = c.In(0);
            var n = x.Shape[0];
            var ch = x.Shape[1];
            var (y, _, _) = Normalization.LayerNorm(x.Reshape([n * ch, (int)(x.Length / Math.Max(1, n * ch))]), 1, c.Float("epsilon", 1e-5f), null, null);
            var shape = new int[x.Rank];
            Array.Fill(shape, 1);
            shape[1] = ch;
            var s = c.In(1).Reshape(shape);
            var b = c.In(2).Reshape(shape);
            c.Set(0, E.Numeric<E.AddOp>(E.Numeric<E.MulOp>(y.Reshape(x.Shape), s), b));
        };
        d["GroupNormalization"] = c =>
        {
            var x = c.In(0);
            var groups = (int)c.Int("num_groups");
            var n = x.Shape[0];
            var ch = x.Shape[1];
            var (y, _, _) = Normalization.LayerNorm(x.Reshape([n * groups, (int)(x.Length / Math.Max(1, n * groups))]), 1, c.Float("epsilon", 1e-5f), null, null);
            var shape = new int[x.Rank];
            Array.Fill(shape, 1);
            shape[1] = ch;
            var scale = c.In(1);
            var bias = c.In(2);
            if (scale.Length != ch)
            {
                // Opset 18 form: one scale per group.
                scale = Movement.Expand(scale.Reshape([groups, 1]), [groups, ch / groups]).Reshape([ch]);
                bias = Movement.Expand(bias.Reshape([groups, 1]), [groups, ch / groups]).Reshape([ch]);
            }
            c.Set(0, E.Numeric<E.AddOp>(E.Numeric<E.MulOp>(y.Reshape(x.Shape), scale.Reshape(shape)), bias.Reshape(shape)));
        };
        d["LayerNormalization"] = c =>
        {
            var x = c.In(0);
            var axis = Movement.NormalizeAxis(c.Int("axis", -1), x.Rank, "LayerNormalization");
            var (y, mean, inv) = Normalization.LayerNorm(x, axis, c.Float("epsilon", 1e-5f), c.In(1), c.Opt(2));
            c.Set(0, y);
            if (c.WantsOutput(1)) c.Set(1, mean);
            if (c.WantsOutput(2)) c.Set(2, inv);
        };
        d["LRN"] = c => c.Set(0, Normalization.Lrn(c.In(0), (int)c.Int("size"), c.Float("alpha", 1e-4f), c.Float("beta", 0.75f), c.Float("bias", 1f)));
        d["MeanVarianceNormalization"] = c =>
        {
            var x = c.In(0);
            var axes = c.Ints("axes")?.Select(a => Movement.NormalizeAxis(a, x.Rank, "MeanVarianceNormalization")).ToArray() ?? [0, 2, 3];
            var mean = Reduce.Run(x, axes, true, ReduceKind.Mean);
            var centered = E.Numeric<E.SubOp>(x, mean);
            var var = Reduce.Run(E.Numeric<E.MulOp>(centered, centered), axes, true, ReduceKind.Mean);
            var std = E.Float<E.SqrtOp>(var);
            c.Set(0, E.Numeric<E.DivOp>(centered, E.Numeric<E.AddOp>(std, Cast.To(Tensor.Scalar(1e-9f), x.Type))));
        };
    }

    private static Tensor MatMulAny(Tensor a, Tensor b) => MatMul.Multiply(a, b);
}
