namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code for products of two activations; see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>
    /// Batched MatMul of two activations, a [..., m, k] times b [..., k, n] into y [..., m, n], the batch dims
    /// broadcast (ranks ≥ 2; a lower-rank operand's missing leading dims count as 1): one GEMM per batch entry.
    /// </summary>
    public static void BatchedMatMul(ReadOnlySpan<float> a, ReadOnlySpan<int> aShape, ReadOnlySpan<float> b, ReadOnlySpan<int> bShape, Span<float> y, ReadOnlySpan<int> yShape)
    {
        var rank = yShape.Length;
        if (rank > MaxRank) throw new KernelException($"planned kernels take rank ≤ {MaxRank}, got {rank}");
        int m = aShape[^2], k = aShape[^1], n = bShape[^1];
        // Batch strides in matrices (0 where an operand broadcasts), over y's batch dims.
        Span<long> sa = stackalloc long[MaxRank];
        Span<long> sb = stackalloc long[MaxRank];
        long accA = 1, accB = 1;
        for (var d = rank - 3; d >= 0; d--)
        {
            var da = d - (rank - aShape.Length);
            var db = d - (rank - bShape.Length);
            var na = da >= 0 ? aShape[da] : 1;
            var nb = db >= 0 ? bShape[db] : 1;
            sa[d] = na == 1 ? 0 : accA;
            sb[d] = nb == 1 ? 0 : accB;
            accA *= na;
            accB *= nb;
        }
        var batches = y.Length / Math.Max(1, m * n);
        for (var i = 0; i < batches; i++)
        {
            long ia = 0, ib = 0, rest = i;
            for (var d = rank - 3; d >= 0; d--)
            {
                var idx = rest % yShape[d];
                rest /= yShape[d];
                ia += idx * sa[d];
                ib += idx * sb[d];
            }
            MatMul.Gemm(a.Slice((int)(ia * m * k), m * k), k, false, b.Slice((int)(ib * k * n), k * n), n, false,
                y.Slice(i * m * n, m * n), n, m, n, k, false);
        }
    }
}
