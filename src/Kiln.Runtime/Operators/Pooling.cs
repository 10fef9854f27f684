using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Pooling family: pooling and resampling (MaxPool … GlobalLpPool, Resize, GridSample, MaxUnpool). The ops are declared in Kiln.Ir/Ops/PoolingOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterPooling(Dictionary<string, Action<OpContext>> d)
    {
        void P(string name, PoolKind kind) => d[name] = c =>
        {
            var x = c.In(0);
            var kernel = c.Ints("kernel_shape")!.Select(v => (int)v).ToArray();
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad"), c.Int("ceil_mode") != 0);
            // Each pooling op declares only its own attributes: count_include_pad (AveragePool), p (LpPool), storage_order (MaxPool).
            var includePad = kind == PoolKind.Average && c.Int("count_include_pad") != 0;
            var p = kind == PoolKind.Lp ? (int)c.Int("p") : 2;
            var storageOrder = kind == PoolKind.Max ? (int)c.Int("storage_order") : 0;
            var (y, idx) = Pool.Run(x, win, kind, includePad, p, c.WantsOutput(1), storageOrder);
            c.Set(0, y);
            if (c.WantsOutput(1)) c.Set(1, idx);
        };
        P("MaxPool", PoolKind.Max);
        P("AveragePool", PoolKind.Average);
        P("LpPool", PoolKind.Lp);
        d["GlobalMaxPool"] = c => c.Set(0, Pool.Global(c.In(0), PoolKind.Max, 2));
        d["GlobalAveragePool"] = c => c.Set(0, Pool.Global(c.In(0), PoolKind.Average, 2));
        d["GlobalLpPool"] = c => c.Set(0, Pool.Global(c.In(0), PoolKind.Lp, (int)c.Int("p")));
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
                var policy = c.Str("keep_aspect_ratio_policy");
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
            var o = new ResizeOptions(c.Str("mode"), c.Str("coordinate_transformation_mode"), c.Str("nearest_mode"),
                c.Float("cubic_coeff_a"), c.Int("exclude_outside") != 0, c.Float("extrapolation_value"), c.Int("antialias") != 0);
            c.Set(0, Resize.Run(x, outShape, scales, roi, o));
        };
        d["GridSample"] = c => c.Set(0, GridSample.Run(c.In(0), c.In(1), c.Str("mode"), c.Str("padding_mode"), c.Int("align_corners") != 0));
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
}
