namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code (products with sparse weights); see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>x·Wᵀ for a sparse f32 W in bitmask panels (+ C: the product's shape, or one row broadcast to every row), then the activation.</summary>
    public static void SparseMatMul(ReadOnlySpan<float> x, Weights.SparseLayout layout, ReadOnlySpan<uint> masks, ReadOnlySpan<float> values, ReadOnlySpan<int> starts,
        ReadOnlySpan<float> c, Span<float> y, string activation)
    {
        var m = x.Length / layout.Columns;
        var accumulate = SeedWithBias(c, y, layout.Rows);
        Kernels.SparseMatMul.Multiply(x, m, layout, masks, values, starts, y, accumulate);
        Fused.Activate(y, activation);
    }

    /// <summary>As above for int8 codes and their scales.</summary>
    public static void SparseMatMul(ReadOnlySpan<float> x, Weights.SparseLayout layout, ReadOnlySpan<uint> masks, ReadOnlySpan<sbyte> codes, ReadOnlySpan<int> starts,
        ReadOnlySpan<float> scales, ReadOnlySpan<float> c, Span<float> y, string activation)
    {
        var m = x.Length / layout.Columns;
        var accumulate = SeedWithBias(c, y, layout.Rows);
        Kernels.SparseMatMul.Multiply(x, m, layout, masks, codes, starts, scales, y, accumulate);
        Fused.Activate(y, activation);
    }
}
