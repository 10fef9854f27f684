using Kiln.Runtime;
using Kiln.Runtime.Kernels;

namespace Kiln.Evaluator.Tests;

/// <summary>
/// 2-D Conv and ConvTranspose kernels against plain double-precision loops, on shapes that reach each path: shifted
/// rows (stride 1: padded, unpadded, dilated, asymmetric pads, filters not a multiple of 8, the unpadded tail panel),
/// im2col blocks (stride 2), depthwise, and the tiling ConvTranspose (kernel = stride) next to the general scatter.
/// </summary>
public sealed class ConvKernelTests
{
    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    private static Tensor Weights(int[] shape, float[] data, bool persistent) =>
        Tensor.Wrap(DType.F32, shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()).ToArray(), persistent);

    [Theory]
    // n, c, h, w, m, kh, kw, stride, dilation, pads (top, left, bottom, right), group
    [InlineData(1, 96, 12, 10, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1)]
    [InlineData(2, 5, 9, 7, 13, 3, 3, 1, 1, 0, 0, 0, 0, 1)]
    [InlineData(1, 7, 11, 13, 9, 1, 1, 1, 1, 0, 0, 0, 0, 1)]
    [InlineData(1, 16, 40, 40, 32, 1, 1, 1, 1, 0, 0, 0, 0, 1)]
    [InlineData(1, 4, 10, 12, 6, 3, 2, 1, 2, 2, 0, 1, 3, 1)]
    [InlineData(1, 3, 17, 19, 16, 3, 3, 2, 1, 1, 1, 1, 1, 1)]
    [InlineData(1, 8, 13, 21, 8, 5, 5, 1, 1, 2, 2, 2, 2, 8)]
    [InlineData(1, 8, 13, 21, 8, 3, 3, 2, 1, 1, 1, 1, 1, 8)]
    [InlineData(1, 4, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4)]     // depthwise, rows of fewer than 8 outputs
    [InlineData(1, 4, 12, 14, 4, 3, 3, 3, 1, 1, 1, 1, 1, 4)]   // depthwise, stride 3
    [InlineData(1, 6, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2)]
    public void Conv_matches_a_naive_loop(int n, int c, int h, int w, int m, int kh, int kw, int stride, int dilation,
        int pt, int pl, int pb, int pr, int group)
    {
        var x = Random(n * c * h * w, 1);
        var wt = Random(m * c / group * kh * kw, 2);
        var bias = Random(m, 3);
        var win = Window.Resolve([h, w], [kh, kw], [stride, stride], [dilation, dilation], [pt, pl, pb, pr], "NOTSET");
        var o = win.OutputShape([h, w]);
        foreach (var persistent in new[] { false, true, true })
        {
            var r = Convolution.Conv(Tensor.FromArray(DType.F32, [n, c, h, w], x), Weights([m, c / group, kh, kw], wt, persistent),
                Tensor.FromArray(DType.F32, [m], bias), win, group);
            Assert.Equal([n, m, o[0], o[1]], r.Shape);
            var rs = r.Span<float>();
            int cg = c / group, mg = m / group;
            for (var b = 0; b < n; b++)
                for (var oc = 0; oc < m; oc++)
                    for (var oy = 0; oy < o[0]; oy++)
                        for (var ox = 0; ox < o[1]; ox++)
                        {
                            double s = bias[oc];
                            for (var ci = 0; ci < cg; ci++)
                                for (var ky = 0; ky < kh; ky++)
                                    for (var kx = 0; kx < kw; kx++)
                                    {
                                        int iy = oy * stride - pt + ky * dilation, ix = ox * stride - pl + kx * dilation;
                                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                        s += (double)x[((b * c + oc / mg * cg + ci) * h + iy) * w + ix] * wt[((oc * cg + ci) * kh + ky) * kw + kx];
                                    }
                            var got = rs[((b * m + oc) * o[0] + oy) * o[1] + ox];
                            Assert.True(Math.Abs(got - s) <= 1e-4 * Math.Max(1, Math.Abs(s)), $"[{b},{oc},{oy},{ox}] got {got}, expected {s}");
                        }
        }
    }

    [Theory]
    // n, c, h, w, m, kernel, stride, pad
    [InlineData(1, 24, 6, 10, 24, 2, 2, 0)] // the FPN upsampler: kernel = stride tiles the output
    [InlineData(2, 5, 3, 13, 1, 2, 2, 0)]   // one filter (the GEMV path), odd width
    [InlineData(1, 4, 5, 4, 3, 3, 3, 0)]    // kernel = stride = 3 (the non-vector interleave)
    [InlineData(1, 4, 5, 6, 3, 3, 2, 1)]    // overlapping windows: the general scatter-add
    public void ConvTranspose_matches_a_naive_loop(int n, int c, int h, int w, int m, int k, int stride, int pad)
    {
        var x = Random(n * c * h * w, 4);
        var wt = Random(c * m * k * k, 5);
        var bias = Random(m, 6);
        int oh = (h - 1) * stride + k - 2 * pad, ow = (w - 1) * stride + k - 2 * pad;
        foreach (var persistent in new[] { false, true })
        {
            var r = Convolution.ConvTranspose(Tensor.FromArray(DType.F32, [n, c, h, w], x), Weights([c, m, k, k], wt, persistent),
                Tensor.FromArray(DType.F32, [m], bias), [k, k], [stride, stride], null, [pad, pad, pad, pad], "NOTSET", null, null, 1);
            Assert.Equal([n, m, oh, ow], r.Shape);
            var expected = new double[n * m * oh * ow];
            for (var b = 0; b < n; b++)
                for (var oc = 0; oc < m; oc++)
                {
                    for (var i = 0; i < oh * ow; i++) expected[(b * m + oc) * oh * ow + i] = bias[oc];
                    for (var ci = 0; ci < c; ci++)
                        for (var iy = 0; iy < h; iy++)
                            for (var ix = 0; ix < w; ix++)
                                for (var ky = 0; ky < k; ky++)
                                    for (var kx = 0; kx < k; kx++)
                                    {
                                        int oy = iy * stride - pad + ky, ox = ix * stride - pad + kx;
                                        if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) continue;
                                        expected[((b * m + oc) * oh + oy) * ow + ox] += (double)x[((b * c + ci) * h + iy) * w + ix] * wt[((ci * m + oc) * k + ky) * k + kx];
                                    }
                }
            var rs = r.Span<float>();
            for (var i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(rs[i] - expected[i]) <= 1e-4 * Math.Max(1, Math.Abs(expected[i])), $"[{i}] got {rs[i]}, expected {expected[i]}");
        }
    }
}
