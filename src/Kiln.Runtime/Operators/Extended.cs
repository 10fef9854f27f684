using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Evaluator entries for resampling, recurrent layers, losses, quantization and the less common ops.</summary>
public static partial class OperatorTable
{
    private static void RegisterExtended(Dictionary<string, Action<OpContext>> d)
    {
        d["Resize"] = c =>
        {
            var x = c.In(0);
            var rank = x.Rank;
            var axes = c.Ints("axes")?.Select(a => Movement.NormalizeAxis(a, rank, "Resize")).ToArray() ?? Enumerable.Range(0, rank).ToArray();
            var roi = Enumerable.Repeat(0.0, rank).Concat(Enumerable.Repeat(1.0, rank)).ToArray();
            if (c.Opt(1) is { Length: > 0 } roiT)
            {
                var rv = roiT.ToDoubles();
                for (var i = 0; i < axes.Length; i++) { roi[axes[i]] = rv[i]; roi[axes[i] + rank] = rv[i + axes.Length]; }
            }
            var scales = Enumerable.Repeat(1.0, rank).ToArray();
            var outShape = (int[])x.Shape.Clone();
            if (c.Opt(3) is { Length: > 0 } sizesT)
            {
                var sizes = sizesT.ToLongs();
                var policy = c.Str("keep_aspect_ratio_policy", "stretch");
                if (policy == "stretch")
                    for (var i = 0; i < axes.Length; i++) { outShape[axes[i]] = (int)sizes[i]; scales[axes[i]] = (double)sizes[i] / x.Shape[axes[i]]; }
                else
                {
                    var ratios = axes.Select((a, i) => (double)sizes[i] / x.Shape[a]).ToArray();
                    var s = policy == "not_larger" ? ratios.Min() : ratios.Max();
                    foreach (var a in axes) { scales[a] = s; outShape[a] = (int)Math.Floor(s * x.Shape[a] + 0.5); }
                }
            }
            else if (c.Opt(2) is { Length: > 0 } scalesT)
            {
                var sv = scalesT.ToDoubles();
                for (var i = 0; i < axes.Length; i++) { scales[axes[i]] = sv[i]; outShape[axes[i]] = (int)Math.Floor(x.Shape[axes[i]] * sv[i]); }
            }
            var o = new ResizeOptions(c.Str("mode", "nearest"), c.Str("coordinate_transformation_mode", "half_pixel"), c.Str("nearest_mode", "round_prefer_floor"),
                c.Float("cubic_coeff_a", -0.75f), c.Int("exclude_outside") != 0, c.Float("extrapolation_value", 0f), c.Int("antialias") != 0);
            c.Set(0, Resize.Run(x, outShape, scales, roi, o));
        };
        foreach (var kind in new[] { "RNN", "GRU", "LSTM" })
        {
            var k = kind;
            d[k] = c =>
            {
                var o = new RecurrentOptions(c.Str("direction", "forward"), (int)c.Int("hidden_size"), c.Strings("activations") ?? [],
                    c.Floats("activation_alpha") ?? [], c.Floats("activation_beta") ?? [], c.Has("clip") ? c.Float("clip") : null,
                    c.Int("linear_before_reset") != 0, c.Int("input_forget") != 0, (int)c.Int("layout"));
                var (y, yh, yc) = Recurrent.Run(k, c.In(0), c.In(1), c.In(2), c.Opt(3), c.Opt(4), c.Opt(5),
                    k == "LSTM" ? c.Opt(6) : null, k == "LSTM" ? c.Opt(7) : null, o);
                c.Set(0, y);
                if (c.OutputCount > 1) c.Set(1, yh);
                if (c.OutputCount > 2) c.Set(2, yc);
            };
        }
        d["NegativeLogLikelihoodLoss"] = c =>
            c.Set(0, Losses.Nll(c.In(0), c.In(1), c.Opt(2), c.Str("reduction", "mean"), c.Has("ignore_index") ? c.Int("ignore_index") : null));
        d["SoftmaxCrossEntropyLoss"] = c =>
        {
            var (loss, logProb) = Losses.SoftmaxCrossEntropy(c.In(0), c.In(1), c.Opt(2), c.Str("reduction", "mean"), c.Has("ignore_index") ? c.Int("ignore_index") : null);
            c.Set(0, loss);
            if (c.OutputCount > 1) c.Set(1, logProb);
        };
        d["QuantizeLinear"] = c =>
        {
            var x = c.In(0);
            var zp = c.Opt(2);
            var outType = zp?.Type ?? c.ElemAttr("output_dtype", DType.U8);
            c.Set(0, Quantize.Linear(x, c.In(1), zp, c.In(1).Length == 1 ? 0 : Movement.NormalizeAxis(c.Int("axis", 1), x.Rank, "QuantizeLinear"), (int)c.Int("block_size"), outType));
        };
        d["DequantizeLinear"] = c =>
        {
            var x = c.In(0);
            c.Set(0, Quantize.Dequantize(x, c.In(1), c.Opt(2), c.In(1).Length == 1 ? 0 : Movement.NormalizeAxis(c.Int("axis", 1), x.Rank, "DequantizeLinear"), (int)c.Int("block_size")));
        };
        d["DynamicQuantizeLinear"] = c =>
        {
            var (y, s, z) = Quantize.Dynamic(c.In(0));
            c.Set(0, y);
            c.Set(1, s);
            c.Set(2, z);
        };
        d["MatMulInteger"] = c =>
        {
            var a = Centered(c.In(0), c.Opt(2), ZeroPointAxis.RowsOfA);
            var b = Centered(c.In(1), c.Opt(3), ZeroPointAxis.ColumnsOfB);
            c.Set(0, Cast.To(MatMul.Multiply(a, b), DType.I32));
        };
        d["ConvInteger"] = c =>
        {
            var x = Centered(c.In(0), c.Opt(2), ZeroPointAxis.Channels);
            var w = Centered(c.In(1), c.Opt(3), ZeroPointAxis.Filters);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad", "NOTSET"));
            c.Set(0, Cast.To(Convolution.Conv(x, w, null, win, (int)c.Int("group", 1)), DType.I32));
        };
        d["QLinearMatMul"] = c =>
        {
            var a = Quantize.Dequantize(c.In(0), c.In(1), c.In(2), 1, 0);
            var b = Quantize.Dequantize(c.In(3), c.In(4), c.In(5), 1, 0);
            var y = MatMul.Multiply(Cast.To(a, DType.F32), Cast.To(b, DType.F32));
            c.Set(0, Quantize.Linear(y, c.In(6), c.In(7), 1, 0, c.In(7).Type));
        };
        d["QLinearConv"] = c =>
        {
            var x = Quantize.Dequantize(c.In(0), c.In(1), c.In(2), 1, 0);
            var w = Quantize.Dequantize(c.In(3), c.In(4), c.In(5), 0, 0);
            var bias = c.Opt(8) is { } bt ? Cast.To(QLinearBias(bt, c.In(1), c.In(4)), DType.F32) : null;
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad", "NOTSET"));
            var y = Convolution.Conv(Cast.To(x, DType.F32), Cast.To(w, DType.F32), bias, win, (int)c.Int("group", 1));
            c.Set(0, Quantize.Linear(y, c.In(6), c.In(7), 1, 0, c.In(7).Type));
        };
        foreach (var w in new[] { "HannWindow", "HammingWindow", "BlackmanWindow" })
        {
            var kind = w;
            d[kind] = c => c.Set(0, Special.Window(kind, c.In(0).GetLong(0), c.Int("periodic", 1) != 0, c.ElemAttr("output_datatype", DType.F32)));
        }
        d["GridSample"] = c => c.Set(0, GridSample.Run(c.In(0), c.In(1), c.Str("mode", "linear"), c.Str("padding_mode", "zeros"), c.Int("align_corners") != 0));
        d["Det"] = c => c.Set(0, Special.Det(c.In(0)));
        d["Einsum"] = c => c.Set(0, Einsum.Run(c.Str("equation"), Enumerable.Range(0, c.InputCount).Select(c.In).ToList()));
        d["Unique"] = c =>
        {
            var x = c.In(0);
            int? axis = c.Has("axis") ? Movement.NormalizeAxis(c.Int("axis"), x.Rank, "Unique") : null;
            var (y, idx, inv, counts) = Special.Unique(x, axis, c.Int("sorted", 1) != 0);
            c.Set(0, y);
            if (c.OutputCount > 1) c.Set(1, idx);
            if (c.OutputCount > 2) c.Set(2, inv);
            if (c.OutputCount > 3) c.Set(3, counts);
        };
        d["StringNormalizer"] = c =>
            c.Set(0, Special.StringNormalizer(c.In(0), c.Str("case_change_action", "NONE"), c.Int("is_case_sensitive") != 0, c.Strings("stopwords") ?? []));
        d["NonMaxSuppression"] = c =>
            c.Set(0, Special.NonMaxSuppression(c.In(0), c.In(1), c.Opt(2) is { Length: > 0 } m ? m.GetLong(0) : 0,
                c.Opt(3) is { Length: > 0 } iou ? iou.GetDouble(0) : 0, c.Opt(4) is { Length: > 0 } st ? st.GetDouble(0) : null, c.Int("center_point_box") != 0));
        d["MaxUnpool"] = c =>
        {
            var x = c.In(0);
            int[] shape;
            if (c.Opt(2) is { } os) shape = Ints32(os);
            else
            {
                var kernel = c.Ints("kernel_shape")!.Select(v => (int)v).ToArray();
                var strides = c.Ints("strides")?.Select(v => (int)v).ToArray() ?? Enumerable.Repeat(1, kernel.Length).ToArray();
                var pads = c.Ints("pads") ?? new long[2 * kernel.Length];
                shape = [x.Shape[0], x.Shape[1], .. x.Shape[2..].Select((s, i) => (s - 1) * strides[i] + kernel[i] - (int)pads[i] - (int)pads[i + kernel.Length])];
            }
            c.Set(0, Special.MaxUnpool(x, c.In(1), shape));
        };
    }

    private enum ZeroPointAxis { RowsOfA, ColumnsOfB, Channels, Filters }

    /// <summary>An integer tensor minus its zero point, as f32 (exact for 8-bit data). A per-axis zero point applies to
    /// A's rows (MatMulInteger a_zero_point), B's columns (b_zero_point), input channels or filters (ConvInteger x / w).</summary>
    private static Tensor Centered(Tensor x, Tensor? zp, ZeroPointAxis axis)
    {
        var f = Cast.To(x, DType.F32);
        if (zp is null) return f;
        var z = Cast.To(zp, DType.F32);
        if (z.Length > 1)
        {
            var shape = Enumerable.Repeat(1, x.Rank).ToArray();
            shape[axis switch { ZeroPointAxis.RowsOfA => x.Rank - 2, ZeroPointAxis.ColumnsOfB => x.Rank - 1, ZeroPointAxis.Filters => 0, _ => 1 }] = (int)z.Length;
            z = z.Reshape(shape);
        }
        return Elementwise.Numeric<Elementwise.SubOp>(f, z);
    }

    /// <summary>QLinearConv bias: int32 in units of x_scale·w_scale.</summary>
    private static Tensor QLinearBias(Tensor bias, Tensor xScale, Tensor wScale)
    {
        var b = bias.ToDoubles();
        var xs = xScale.GetDouble(0);
        var ws = wScale.ToDoubles();
        return Movement.FromDoubles(DType.F64, bias.Shape, b.Select((v, i) => v * xs * ws[ws.Length == 1 ? 0 : i]).ToArray());
    }
}
