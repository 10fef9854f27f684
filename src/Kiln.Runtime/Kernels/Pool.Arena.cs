using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code for the pooling family (pooling, nearest Resize) and per-channel BatchNorm; see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>Global average (or max) pooling: each of the planes of <paramref name="inner"/> elements becomes one value.</summary>
    public static void GlobalPool(ReadOnlySpan<float> x, int planes, int inner, Span<float> y, bool max)
    {
        if (x.Length < (long)planes * inner || y.Length < planes) throw new KernelException("GlobalPool operands are shorter than their dims");
        for (var p = 0; p < planes; p++)
        {
            var plane = x.Slice(p * inner, inner);
            y[p] = inner == 0 ? (max ? float.NegativeInfinity : float.NaN) : max ? TensorPrimitives.Max(plane) : TensorPrimitives.Sum(plane) / inner;
        }
    }

    /// <summary>
    /// 2-D max or average pooling of planes [h, wd] into [oh, ow] with the window's kernel, strides, dilations and
    /// pads; an average divides by the taps inside the input, or with <paramref name="countIncludePad"/> by those inside
    /// the padded input (not the ones a ceil-mode window adds past it).
    /// </summary>
    public static void Pool2D(ReadOnlySpan<float> x, int planes, int h, int wd, Span<float> y, int oh, int ow, Window win, bool max, bool countIncludePad)
    {
        if (win.Rank != 2 || win.OutputSize(0, h) != oh || win.OutputSize(1, wd) != ow)
            throw new KernelException($"pooling a {h}×{wd} input does not make {oh}×{ow}");
        if (x.Length < (long)planes * h * wd || y.Length < (long)planes * oh * ow) throw new KernelException("pooling operands are shorter than their dims");
        int kh = win.Kernel[0], kw = win.Kernel[1], sh = win.Strides[0], sw = win.Strides[1], dh = win.Dilations[0], dw = win.Dilations[1];
        int ph = win.PadsBegin[0], pw = win.PadsBegin[1];
        int hp = h + win.PadsEnd[0], wp = wd + win.PadsEnd[1];
        if (max && dw == 1 && wd <= 4096)
        {
            MaxPoolByColumns(x, planes, h, wd, y, oh, ow, win);
            return;
        }
        // Row by row, tap by tap: each tap adds (or maxes) a strided run of one input row into the output row, over the
        // outputs whose column falls inside the input; stride 1 runs are whole vectors.
        for (var p = 0; p < planes; p++)
        {
            var plane = x.Slice(p * h * wd, h * wd);
            for (var oy = 0; oy < oh; oy++)
            {
                var acc = y.Slice((p * oh + oy) * ow, ow);
                acc.Fill(max ? float.NegativeInfinity : 0f);
                int rowsInside = 0, rowsPadded = 0;
                for (var ky = 0; ky < kh; ky++)
                {
                    var iy = oy * sh - ph + ky * dh;
                    if (iy < hp) rowsPadded++;
                    if ((uint)iy >= (uint)h) continue;
                    rowsInside++;
                    var row = plane.Slice(iy * wd, wd);
                    for (var kx = 0; kx < kw; kx++)
                    {
                        var off = kx * dw - pw;
                        var lo = Math.Min(ow, Math.Max(0, (-off + sw - 1) / sw));
                        var hi = wd - 1 - off < 0 ? 0 : Math.Min(ow, (wd - 1 - off) / sw + 1);
                        if (hi <= lo) continue;
                        if (sw == 1)
                        {
                            var src = row.Slice(lo + off, hi - lo);
                            var dst = acc.Slice(lo, hi - lo);
                            if (max) TensorPrimitives.Max(dst, src, dst);
                            else TensorPrimitives.Add(dst, src, dst);
                            continue;
                        }
                        for (var ox = lo; ox < hi; ox++)
                        {
                            var v = row[ox * sw + off];
                            acc[ox] = max ? MathF.Max(acc[ox], v) : acc[ox] + v;
                        }
                    }
                }
                if (max) continue;
                for (var ox = 0; ox < ow; ox++)
                {
                    int colsInside = 0, colsPadded = 0;
                    for (var kx = 0; kx < kw; kx++)
                    {
                        var ix = ox * sw - pw + kx * dw;
                        if (ix < wp) colsPadded++;
                        if ((uint)ix < (uint)wd) colsInside++;
                    }
                    acc[ox] /= countIncludePad ? rowsPadded * colsPadded : Math.Max(1, rowsInside * colsInside);
                }
            }
        }
    }

    /// <summary>
    /// Max pooling without column dilation: per output row, the max of the window's input rows in vectors, then each
    /// output the max of its kw adjacent columns of that (MobileNet's 2×2 stride-2 pools, 3×3 ones).
    /// </summary>
    private static void MaxPoolByColumns(ReadOnlySpan<float> x, int planes, int h, int wd, Span<float> y, int oh, int ow, Window win)
    {
        int kh = win.Kernel[0], kw = win.Kernel[1], sh = win.Strides[0], sw = win.Strides[1], dh = win.Dilations[0], ph = win.PadsBegin[0], pw = win.PadsBegin[1];
        Span<float> column = stackalloc float[wd];
        for (var p = 0; p < planes; p++)
        {
            var plane = x.Slice(p * h * wd, h * wd);
            for (var oy = 0; oy < oh; oy++)
            {
                var rows = 0;
                for (var ky = 0; ky < kh; ky++)
                {
                    var iy = oy * sh - ph + ky * dh;
                    if ((uint)iy >= (uint)h) continue;
                    if (rows++ == 0) plane.Slice(iy * wd, wd).CopyTo(column);
                    else TensorPrimitives.Max(column, plane.Slice(iy * wd, wd), column);
                }
                var dst = y.Slice((p * oh + oy) * ow, ow);
                if (rows == 0) { dst.Fill(float.NegativeInfinity); continue; }
                for (var ox = 0; ox < ow; ox++)
                {
                    int from = Math.Max(0, ox * sw - pw), to = Math.Min(wd, ox * sw - pw + kw);
                    var m = float.NegativeInfinity;
                    for (var ix = from; ix < to; ix++) m = MathF.Max(m, column[ix]);
                    dst[ox] = m;
                }
            }
        }
    }

    /// <summary>
    /// Nearest-neighbour Resize by whole factors (asymmetric coordinates, floor): output (oy, ox) of each plane reads
    /// input (oy / fy, ox / fx).
    /// </summary>
    public static void ResizeNearest(ReadOnlySpan<float> x, int planes, int h, int wd, Span<float> y, int fy, int fx)
    {
        int oh = h * fy, ow = wd * fx;
        if (x.Length < (long)planes * h * wd || y.Length < (long)planes * oh * ow) throw new KernelException("Resize operands are shorter than their dims");
        for (var p = 0; p < planes; p++)
            for (var iy = 0; iy < h; iy++)
            {
                var src = x.Slice((p * h + iy) * wd, wd);
                var first = y.Slice((p * oh + iy * fy) * ow, ow);
                if (fx == 1) src.CopyTo(first);
                else for (var ix = 0; ix < wd; ix++) first.Slice(ix * fx, fx).Fill(src[ix]);
                for (var r = 1; r < fy; r++) first.CopyTo(y.Slice((p * oh + iy * fy + r) * ow, ow));
            }
    }

    /// <summary>Inference BatchNormalization over x [n, c, inner…]: y = (x − mean) / sqrt(var + ε) · scale + bias, per channel.</summary>
    public static void BatchNorm(ReadOnlySpan<float> x, int n, int c, int inner, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias,
        ReadOnlySpan<float> mean, ReadOnlySpan<float> variance, float epsilon, Span<float> y)
    {
        if (x.Length < (long)n * c * inner || y.Length < (long)n * c * inner) throw new KernelException("BatchNormalization operands are shorter than their dims");
        for (var ch = 0; ch < c; ch++)
        {
            // As the operator entry: the multiplier and offset in double, applied in f32.
            var mul = (float)(scale[ch] / Math.Sqrt(variance[ch] + (double)epsilon));
            var add = (float)(bias[ch] - mean[ch] * (double)scale[ch] / Math.Sqrt(variance[ch] + (double)epsilon));
            for (var b = 0; b < n; b++)
            {
                var at = (b * c + ch) * inner;
                TensorPrimitives.Multiply(x.Slice(at, inner), mul, y.Slice(at, inner));
                TensorPrimitives.Add(y.Slice(at, inner), add, y.Slice(at, inner));
            }
        }
    }
}
