namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code (products with quantized weights); see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>x·Wᵀ for a quantized W (+ C: the product's shape, or one row broadcast to every row), then the activation.</summary>
    public static void QuantizedMatMul(ReadOnlySpan<float> x, Weights.QuantizedLayout layout, ReadOnlySpan<byte> codes, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros,
        ReadOnlySpan<float> c, Span<float> y, string activation, int activationBits = 0, ReadOnlySpan<float> activationScales = default)
    {
        var m = x.Length / layout.Columns;
        var accumulate = SeedWithBias(c, y, layout.Rows);
        Kernels.QuantizedMatMul.Multiply(x, m, layout, codes, scales, zeros, y, accumulate, activationBits, activationScales);
        Fused.Activate(y, activation);
    }
}
