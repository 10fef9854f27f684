using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Conv, ConvTranspose and their integer / quantized forms; the spatial-size arithmetic pooling shares.</summary>
internal static class ConvOps
{
    internal const string ConvAttrs = "auto_pad:string=NOTSET, dilations:ints?, group:int=1, kernel_shape:ints?, pads:ints?, strides:ints?";

    public static void Register(OpRegistry r)
    {
        r.Add("Conv", "X, W, B?", "Y", ConvAttrs, c => c.Set(0, c.Elem(0), ConvShape(c, c.ShapeOf(0), c.ShapeOf(1))));
        r.Add("ConvInteger", "x, w, x_zero_point?, w_zero_point?", "y", ConvAttrs,
            c => c.Set(0, DType.I32, ConvShape(c, c.ShapeOf(0), c.ShapeOf(1))), since: 10);
        r.Add("QLinearConv", "x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B?", "y", ConvAttrs,
            c => c.Set(0, c.Elem(7), ConvShape(c, c.ShapeOf(0), c.ShapeOf(3))), since: 10);
        r.Add("ConvTranspose", "X, W, B?", "Y", ConvAttrs + ", output_padding:ints?, output_shape:ints?", ConvTransposeRule);
    }

    internal static Shape? ConvShape(InferenceContext c, Shape? x, Shape? w)
    {
        if (x is null) return null;
        if (x.Rank < 3) throw c.Fail($"input must have rank ≥ 3 (N, C, spatial…), not {x}");
        var spatial = x.Rank - 2;
        var group = c.Int("group");
        if (w is not null)
        {
            if (w.Rank != x.Rank) throw c.Fail($"weight {w} and input {x} differ in rank");
            if (x[1].Value is { } ch && w[1].Value is { } wc && ch != wc * group)
                throw c.Fail($"input has {ch} channels but weight {w} with group {group} expects {wc * group}");
        }
        var kernel = c.Ints("kernel_shape") ?? w?.Dims.Skip(2).Select(d => d.Value ?? -1).ToArray();
        var outChannels = w?[0] ?? Dim.Unknown;
        if (kernel is null || kernel.Any(k => k < 0)) return new Shape([x[0], outChannels, .. Enumerable.Repeat(Dim.Unknown, spatial)]);
        return new Shape([x[0], outChannels, .. SpatialOut(c, x, kernel, ceilMode: false)]);
    }

    /// <summary>Output spatial dims of a sliding window (Conv, pooling) given kernel, strides, dilations, pads or auto_pad.</summary>
    internal static Dim[] SpatialOut(InferenceContext c, Shape x, long[] kernel, bool ceilMode)
    {
        var spatial = x.Rank - 2;
        if (kernel.Length != spatial) throw c.Fail($"kernel_shape has {kernel.Length} dims for {spatial} spatial dims");
        var strides = c.Ints("strides") ?? Enumerable.Repeat(1L, spatial).ToArray();
        var dil = c.Ints("dilations") ?? Enumerable.Repeat(1L, spatial).ToArray();
        var pads = c.Ints("pads") ?? new long[2 * spatial];
        var autoPad = c.Attr("auto_pad") is StringAttr s ? s.Value : "NOTSET";
        if (strides.Length != spatial || dil.Length != spatial || pads.Length != 2 * spatial)
            throw c.Fail("strides, dilations or pads do not match the spatial rank");
        var result = new Dim[spatial];
        for (var i = 0; i < spatial; i++)
        {
            var input = x[i + 2];
            var eff = dil[i] * (kernel[i] - 1) + 1;
            switch (autoPad)
            {
                case "SAME_UPPER" or "SAME_LOWER":
                    result[i] = Dim.CeilDivide(input, strides[i]);
                    break;
                case "VALID":
                    result[i] = Dim.FloorDivide(input - eff, strides[i]) + 1;
                    break;
                default:
                    var span = input + (pads[i] + pads[i + spatial] - eff);
                    if (span.Value is { } total)
                    {
                        if (total < 0) throw c.Fail($"window {eff} is larger than padded input {input + (pads[i] + pads[i + spatial])} on spatial dim {i}");
                        var o = ceilMode ? (total + strides[i] - 1) / strides[i] + 1 : total / strides[i] + 1;
                        // In ceil mode the last window must start inside the input or its left padding.
                        if (ceilMode && (o - 1) * strides[i] >= input.Value!.Value + pads[i]) o--;
                        result[i] = Dim.Const(o);
                    }
                    // Symbolic: ⌊span / stride⌋ + 1; in ceil mode the last-window rule needs the number, so unknown.
                    else result[i] = ceilMode && strides[i] != 1 ? Dim.Unknown : Dim.FloorDivide(span, strides[i]) + 1;
                    break;
            }
        }
        return result;
    }

    private static void ConvTransposeRule(InferenceContext c)
    {
        var x = c.ShapeOf(0);
        var w = c.ShapeOf(1);
        if (x is null || w is null) { c.Set(0, c.Elem(0), (Shape?)null); return; }
        var spatial = x.Rank - 2;
        var group = c.Int("group");
        var outChannels = w[1] * group;
        if (c.Ints("output_shape") is { } os)
        {
            var tail = os.Length == spatial ? os : os.Skip(os.Length - spatial).ToArray();
            c.Set(0, c.Elem(0), [x[0], outChannels, .. tail.Select(Dim.Const)]);
            return;
        }
        var kernel = c.Ints("kernel_shape") ?? w.Dims.Skip(2).Select(d => d.Value ?? -1).ToArray();
        var strides = c.Ints("strides") ?? Enumerable.Repeat(1L, spatial).ToArray();
        var dil = c.Ints("dilations") ?? Enumerable.Repeat(1L, spatial).ToArray();
        var pads = c.Ints("pads") ?? new long[2 * spatial];
        var outPad = c.Ints("output_padding") ?? new long[spatial];
        var autoPad = c.Attr("auto_pad") is StringAttr s ? s.Value : "NOTSET";
        var dims = new Dim[spatial];
        for (var i = 0; i < spatial; i++)
        {
            if (autoPad is "SAME_UPPER" or "SAME_LOWER") { dims[i] = x[i + 2] * strides[i]; continue; }
            var p = autoPad == "VALID" ? 0 : pads[i] + pads[i + spatial];
            dims[i] = (x[i + 2] - 1) * strides[i] + (outPad[i] + (kernel[i] - 1) * dil[i] + 1 - p);
        }
        c.Set(0, c.Elem(0), [x[0], outChannels, .. dims]);
    }
}
