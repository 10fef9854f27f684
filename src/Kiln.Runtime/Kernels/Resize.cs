namespace Kiln.Runtime.Kernels;

/// <summary>Resize options (ONNX Resize-19 attributes).</summary>
public sealed record ResizeOptions(string Mode, string CoordinateMode, string NearestMode, double CubicA, bool ExcludeOutside,
    double ExtrapolationValue, bool Antialias);

/// <summary>
/// Resize as separable 1-D resampling, one axis at a time, in double: nearest, linear and cubic, every coordinate
/// transformation mode, antialiasing filters for downscaling, and tf_crop_and_resize extrapolation.
/// </summary>
public static class Resize
{
    public static Tensor Run(Tensor x, int[] outShape, double[] scales, double[] roi, ResizeOptions o)
    {
        var rank = x.Rank;
        if (NearestPlanes(x, outShape, scales, roi, o) is { } fast) return fast;
        var data = x.ToDoubles();
        var shape = (int[])x.Shape.Clone();
        var outside = new bool[Tensor.Count(outShape)];
        for (var axis = 0; axis < rank; axis++)
        {
            if (outShape[axis] == shape[axis] && scales[axis] == 1 && o.CoordinateMode != "tf_crop_and_resize") continue;
            var (taps, weights, outOfRange) = Plan(shape[axis], outShape[axis], scales[axis], roi[axis], roi[axis + rank], o);
            var newShape = (int[])shape.Clone();
            newShape[axis] = outShape[axis];
            var outer = Tensor.Count(shape[..axis]);
            var inner = Tensor.Count(shape[(axis + 1)..]);
            var res = new double[Tensor.Count(newShape)];
            for (long a = 0; a < outer; a++)
                for (var j = 0; j < outShape[axis]; j++)
                    for (long i = 0; i < inner; i++)
                    {
                        double acc = 0;
                        for (var t = 0; t < taps[j].Length; t++)
                            acc += weights[j][t] * data[(a * shape[axis] + taps[j][t]) * inner + i];
                        res[(a * outShape[axis] + j) * inner + i] = acc;
                    }
            if (outOfRange.Any(b => b))
            {
                // Mark outputs whose coordinate on this axis fell outside the input (tf_crop_and_resize).
                var full = Movement.Indices(outShape, idx => outOfRange.Length > idx[axis] && outOfRange[idx[axis]] ? 1 : 0);
                for (var k = 0; k < full.Length; k++) if (full[k] == 1) outside[k] = true;
            }
            data = res;
            shape = newShape;
        }
        for (var k = 0; k < data.Length; k++) if (outside[k]) data[k] = o.ExtrapolationValue;
        if (x.Type.IsInteger())
            for (var k = 0; k < data.Length; k++) data[k] = Math.Round(data[k]);
        return Movement.FromDoubles(x.Type, outShape, data);
    }

    /// <summary>
    /// f32 nearest resizing of the last two axes (FPN upsampling): each output row copies source elements by the
    /// same index plan as the general path, without the double round trip. Null when the case is not that.
    /// </summary>
    private static Tensor? NearestPlanes(Tensor x, int[] outShape, double[] scales, double[] roi, ResizeOptions o)
    {
        var rank = x.Rank;
        if (x.Type != DType.F32 || rank < 2 || o.Mode != "nearest" || o.Antialias || o.CoordinateMode == "tf_crop_and_resize") return null;
        for (var a = 0; a < rank - 2; a++)
            if (outShape[a] != x.Shape[a] || scales[a] != 1) return null;
        int h = x.Shape[^2], w = x.Shape[^1], oh = outShape[^2], ow = outShape[^1];
        var rows = Plan(h, oh, scales[rank - 2], roi[rank - 2], roi[2 * rank - 2], o).Taps;
        var cols = Plan(w, ow, scales[rank - 1], roi[rank - 1], roi[2 * rank - 1], o).Taps;
        var r = Tensor.Uninitialized(DType.F32, outShape);
        var src = x.Span<float>();
        var dst = r.Span<float>();
        var planes = x.Length / ((long)h * w);
        for (long pl = 0; pl < planes; pl++)
        {
            var inPlane = src.Slice((int)(pl * h * w), h * w);
            var outPlane = dst.Slice((int)(pl * oh * ow), oh * ow);
            for (var j = 0; j < oh; j++)
            {
                var outRow = outPlane.Slice(j * ow, ow);
                if (j > 0 && rows[j][0] == rows[j - 1][0]) { outPlane.Slice((j - 1) * ow, ow).CopyTo(outRow); continue; }
                var inRow = inPlane.Slice(rows[j][0] * w, w);
                for (var i = 0; i < ow; i++) outRow[i] = inRow[cols[i][0]];
            }
        }
        return r;
    }

    private static double Original(double xr, int inLen, int outLen, double scale, double roiStart, double roiEnd, string mode) => mode switch
    {
        "half_pixel" => (xr + 0.5) / scale - 0.5,
        "half_pixel_symmetric" => inLen / 2.0 * (1 - outLen / (scale * inLen)) + (xr + 0.5) / scale - 0.5,
        "pytorch_half_pixel" => outLen > 1 ? (xr + 0.5) / scale - 0.5 : 0,
        // The resized length is in·scale (not rounded), as the ONNX reference computes it when scales are given.
        "align_corners" => outLen == 1 ? 0 : xr * (inLen - 1) / (inLen * scale - 1),
        "tf_half_pixel_for_nn" => (xr + 0.5) / scale,
        "asymmetric" => xr / scale,
        "tf_crop_and_resize" => outLen > 1 ? roiStart * (inLen - 1) + xr * (roiEnd - roiStart) * (inLen - 1) / (outLen - 1) : 0.5 * (roiStart + roiEnd) * (inLen - 1),
        _ => throw new KernelException($"Resize coordinate_transformation_mode '{mode}' is not supported"),
    };

    private static (int[][] Taps, double[][] Weights, bool[] Outside) Plan(int inLen, int outLen, double scale, double roiStart, double roiEnd, ResizeOptions o)
    {
        var taps = new int[outLen][];
        var weights = new double[outLen][];
        var outside = new bool[outLen];
        for (var j = 0; j < outLen; j++)
        {
            var x = Original(j, inLen, outLen, scale, roiStart, roiEnd, o.CoordinateMode);
            if (o.CoordinateMode == "tf_crop_and_resize" && (x < 0 || x > inLen - 1)) outside[j] = true;
            if (o.Mode == "nearest")
            {
                var n = o.NearestMode switch
                {
                    "round_prefer_ceil" => Math.Floor(x + 0.5),
                    "floor" => Math.Floor(x),
                    "ceil" => Math.Ceiling(x),
                    _ => x == Math.Floor(x) + 0.5 ? Math.Floor(x) : Math.Round(x),
                };
                taps[j] = [(int)Math.Clamp(n, 0, inLen - 1)];
                weights[j] = [1];
                continue;
            }
            var aa = o.Antialias && scale < 1;
            var support = o.Mode == "linear" ? 1.0 : 2.0;
            var stretch = aa ? 1 / scale : 1;
            var lo = (int)Math.Floor(x - support * stretch) + 1;
            var hi = (int)Math.Floor(x + support * stretch);
            if (!aa && o.Mode == "linear") { lo = (int)Math.Floor(x); hi = lo + 1; }
            if (!aa && o.Mode == "cubic") { lo = (int)Math.Floor(x) - 1; hi = lo + 3; }
            var t = new List<int>();
            var w = new List<double>();
            for (var i = lo; i <= hi; i++)
            {
                var d = Math.Abs(x - i) / stretch;
                var wt = o.Mode == "linear" ? Math.Max(0, 1 - d) : Cubic(d, o.CubicA);
                if (i < 0 || i >= inLen)
                {
                    if (o.ExcludeOutside) continue;
                }
                t.Add(Math.Clamp(i, 0, inLen - 1));
                w.Add(wt);
            }
            var sum = w.Sum();
            if ((aa || o.ExcludeOutside) && sum != 0) for (var k = 0; k < w.Count; k++) w[k] /= sum;
            taps[j] = t.ToArray();
            weights[j] = w.ToArray();
        }
        return (taps, weights, outside);
    }

    private static double Cubic(double d, double a)
    {
        if (d <= 1) return ((a + 2) * d - (a + 3)) * d * d + 1;
        if (d < 2) return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
        return 0;
    }
}
