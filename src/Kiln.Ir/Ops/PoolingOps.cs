using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Pooling, Resize (and Upsample, adapted to Resize), GridSample, RoiAlign, MaxUnpool.</summary>
internal static class PoolingOps
{
    private const string PoolAttrs = "auto_pad:string=NOTSET, ceil_mode:int=0, dilations:ints?, kernel_shape:ints!, pads:ints?, strides:ints?";

    public static void Register(OpRegistry r)
    {
        r.Add("MaxPool", "X", "Y, Indices?", PoolAttrs + ", storage_order:int=0", c =>
        {
            var s = PoolShape(c);
            c.Set(0, c.Elem(0), s);
            c.Set(1, DType.I64, s);
        });
        r.Add("AveragePool", "X", "Y", PoolAttrs + ", count_include_pad:int=0", c => c.Set(0, c.Elem(0), PoolShape(c)));
        r.Add("LpPool", "X", "Y", PoolAttrs + ", p:int=2", c => c.Set(0, c.Elem(0), PoolShape(c)));
        foreach (var op in new[] { "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool" })
            r.Add(op, "X", "Y", op == "GlobalLpPool" ? "p:int=2" : "", c =>
            {
                var s = c.RankedShape(0);
                c.Set(0, c.Elem(0), s.Dims.Select((d, i) => i < 2 ? d : Dim.One));
            });
        r.Add("MaxUnpool", "X, I, output_shape?", "output", "kernel_shape:ints!, pads:ints?, strides:ints?", MaxUnpoolRule, since: 9);
        r.Add("MaxRoiPool", "X, rois", "Y", "pooled_shape:ints!, spatial_scale:float=1.0", c =>
        {
            var x = c.RankedShape(0);
            var rois = c.RankedShape(1);
            var p = c.Ints("pooled_shape")!;
            c.Set(0, c.Elem(0), [rois[0], x[1], .. p.Select(Dim.Const)]);
        });
        r.Add("RoiAlign", "X, rois, batch_indices", "Y",
            "coordinate_transformation_mode:string=half_pixel, mode:string=avg, output_height:int=1, output_width:int=1, sampling_ratio:int=0, spatial_scale:float=1.0", c =>
            {
                var x = c.RankedShape(0);
                var rois = c.RankedShape(1);
                c.Set(0, c.Elem(0), [rois[0], x[1], Dim.Const(c.Int("output_height")), Dim.Const(c.Int("output_width"))]);
            }, since: 10);
        r.Add("Resize", "X, roi?, scales?, sizes?", "Y",
            "antialias:int=0, axes:ints?, coordinate_transformation_mode:string=half_pixel, cubic_coeff_a:float=-0.75, exclude_outside:int=0, " +
            "extrapolation_value:float=0.0, keep_aspect_ratio_policy:string=stretch, mode:string=nearest, nearest_mode:string=round_prefer_floor",
            ResizeRule, ResizeAdapter, since: 10);
        r.Add("Upsample", "X, scales", "Y", "mode:string=nearest", ResizeRule, UpsampleAdapter, since: 7);
        r.Add("GridSample", "X, grid", "Y", "align_corners:int=0, mode:string=linear, padding_mode:string=zeros", c =>
        {
            var x = c.RankedShape(0);
            var g = c.RankedShape(1);
            c.Set(0, c.Elem(0), [x[0], x[1], .. g.Dims.Skip(1).Take(g.Rank - 2)]);
        }, c =>
        {
            // Opset 20 renamed the modes bilinear → linear and bicubic → cubic.
            if (c.Opset < 20 && c.Attributes.TryGetValue("mode", out var m) && m is StringAttr s)
                c.Attributes["mode"] = new StringAttr(s.Value switch { "bilinear" => "linear", "bicubic" => "cubic", var v => v });
        }, since: 16);
    }

    private static Shape? PoolShape(InferenceContext c)
    {
        var x = c.ShapeOf(0);
        if (x is null) return null;
        if (x.Rank < 3) throw c.Fail($"input must have rank ≥ 3, not {x}");
        var kernel = c.Ints("kernel_shape") ?? throw c.Fail("kernel_shape is required");
        return new Shape([x[0], x[1], .. ConvOps.SpatialOut(c, x, kernel, c.Int("ceil_mode") != 0)]);
    }

    private static void MaxUnpoolRule(InferenceContext c)
    {
        var x = c.RankedShape(0);
        if (c.HasInput(2)) { c.Set(0, c.Elem(0), Rules.ShapeFromKnown(c, 2) ?? new Shape(x.Dims.Select(_ => Dim.Unknown))); return; }
        var k = c.Ints("kernel_shape")!;
        var spatial = x.Rank - 2;
        var strides = c.Ints("strides") ?? Enumerable.Repeat(1L, spatial).ToArray();
        var pads = c.Ints("pads") ?? new long[2 * spatial];
        c.Set(0, c.Elem(0), [x[0], x[1], .. Enumerable.Range(0, spatial).Select(i => (x[i + 2] - 1) * strides[i] + (k[i] - pads[i] - pads[i + spatial]))]);
    }

    private static void ResizeRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var x = c.ShapeOf(0);
        if (x is null) { c.Set(0, elem, (Shape?)null); return; }
        var isUpsample = c.Node.Op == "Upsample";
        var axes = c.Ints("axes")?.Select(a => c.Axis(a, x.Rank)).ToArray() ?? Enumerable.Range(0, x.Rank).ToArray();
        var dims = x.Dims.ToArray();
        if (!isUpsample && c.HasInput(3))
        {
            var sizes = c.Known(3)?.Values;
            if (sizes is null) { c.Set(0, elem, x.Dims.Select(_ => Dim.Unknown)); return; }
            if (sizes.Length != axes.Length) throw c.Fail($"sizes has {sizes.Length} values for {axes.Length} axes");
            var policy = c.Str("keep_aspect_ratio_policy");
            if (policy != "stretch") { c.Set(0, elem, x.Dims.Select((d, i) => axes.Contains(i) ? Dim.Unknown : d)); return; }
            for (var i = 0; i < axes.Length; i++) dims[axes[i]] = sizes[i];
            c.Set(0, elem, dims);
            return;
        }
        var scalesInput = isUpsample ? 1 : 2;
        var scales = c.ConstantData(scalesInput) is { Elem: DType.F32 } data ? data.ToArray<float>() : null;
        if (scales is null || scales.Length == 0)
        {
            c.Set(0, elem, x.Dims.Select(_ => Dim.Unknown));
            return;
        }
        if (scales.Length != axes.Length) throw c.Fail($"scales has {scales.Length} values for {axes.Length} axes");
        for (var i = 0; i < axes.Length; i++)
        {
            var d = dims[axes[i]];
            dims[axes[i]] = d.Value is { } n ? Dim.Const((long)Math.Floor(n * (double)scales[i])) : scales[i] == 1 ? d : scales[i] % 1 == 0 ? d * (long)scales[i] : Dim.Unknown;
        }
        c.Set(0, elem, dims);
    }

    /// <summary>Resize-10 took (X, scales) and sampled like Upsample: asymmetric coordinates, nearest rounds down.</summary>
    private static void ResizeAdapter(AdapterContext c)
    {
        if (c.Opset >= 11) return;
        var x = c.Input(0);
        var scales = c.Input(1);
        c.Inputs.Clear();
        c.Inputs.AddRange([x, null, scales]);
        c.Attributes["coordinate_transformation_mode"] = new StringAttr("asymmetric");
        c.Attributes["nearest_mode"] = new StringAttr("floor");
    }

    /// <summary>Upsample (deprecated in opset 10) is Resize with asymmetric coordinates and nearest rounding down.</summary>
    private static void UpsampleAdapter(AdapterContext c)
    {
        var x = c.Input(0);
        Value scales;
        if (c.Take<FloatsAttr>("scales") is { } attr) scales = c.FloatConstant(attr.Value, "scales");
        else scales = c.Input(1) ?? throw c.Fail("Upsample needs scales");
        var mode = c.Take<StringAttr>("mode")?.Value ?? "nearest";
        if (c.Attributes.ContainsKey("height_scale")) throw c.Fail("Upsample-1 (height_scale/width_scale) is not supported");
        c.Op = "Resize";
        c.Inputs.Clear();
        c.Inputs.AddRange([x, null, scales]);
        c.Attributes["mode"] = new StringAttr(mode is "bilinear" or "linear" ? "linear" : "nearest");
        c.Attributes["coordinate_transformation_mode"] = new StringAttr("asymmetric");
        if (mode == "nearest") c.Attributes["nearest_mode"] = new StringAttr("floor");
    }
}
