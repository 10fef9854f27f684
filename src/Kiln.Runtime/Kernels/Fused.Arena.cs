namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code (Kiln's fused ops: rotary embedding and MatMul+Add); see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>Rotary embedding over rows of d (row r at position r mod s) with cos/sin [s, d/2].</summary>
    /// <remarks>
    /// Rows of x are d long; row r rotates by position (r / <paramref name="inner"/>) mod <paramref name="s"/>: the
    /// positions run along one axis of x, with <paramref name="inner"/> rows per position after it ([b, h, s, d]
    /// with cos [s, d/2]: inner 1; [b, s, h, d] with cos [1, s, 1, d/2]: inner h).
    /// </remarks>
    public static void Rotary(ReadOnlySpan<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, Span<float> y, int inner, int s, int d, bool interleaved)
    {
        var half = d / 2;
        for (int row = 0, rows = x.Length / d; row < rows; row++)
        {
            var p = row / inner % s * half;
            var xr = x.Slice(row * d, d);
            var yr = y.Slice(row * d, d);
            var c = cos.Slice(p, half);
            var sn = sin.Slice(p, half);
            for (var i = 0; i < half; i++)
            {
                int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                float x0 = xr[a], x1 = xr[b];
                yr[a] = x0 * c[i] - x1 * sn[i];
                yr[b] = x0 * sn[i] + x1 * c[i];
            }
        }
    }

    /// <summary>
    /// Y [rows of <paramref name="columns"/>] seeded with C (the product's shape, or one row repeated for every row), so
    /// a product can accumulate onto it; false when there is no C.
    /// </summary>
    internal static bool SeedWithBias(ReadOnlySpan<float> c, Span<float> y, int columns)
    {
        if (c.IsEmpty) return false;
        if (c.Length == y.Length) c.CopyTo(y);
        else for (var i = 0; i + columns <= y.Length; i += columns) c.CopyTo(y.Slice(i, columns));
        return true;
    }

    /// <summary>A·B + C (C the product's shape, or one row broadcast to every row), then the activation.</summary>
    public static void MatMulAdd(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Tensor weights, ReadOnlySpan<float> c, Span<float> y, int m, int n, int k, string activation)
    {
        SeedWithBias(c, y, n);
        MatMul.Gemm(a, k, false, b, n, false, y, n, m, n, k, accumulate: true, weights, 0);
        Fused.Activate(y, activation);
    }
}
