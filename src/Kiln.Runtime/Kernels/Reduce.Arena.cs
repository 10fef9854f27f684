using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code for the reduction family; see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>
    /// Sum, mean, max or min over the middle axis of x viewed as [outer, r, inner] (the reduced axes, contiguous):
    /// y [outer, inner]. Rows (inner 1) reduce in vectors; otherwise rows of inner values accumulate in vectors.
    /// </summary>
    public static void Reduce(ReadOnlySpan<float> x, Span<float> y, int outer, int r, int inner, ReduceKind kind)
    {
        if (kind is not (ReduceKind.Sum or ReduceKind.Mean or ReduceKind.Max or ReduceKind.Min)) throw new KernelException($"planned Reduce does not compute {kind}");
        if (x.Length < (long)outer * r * inner || y.Length < (long)outer * inner) throw new KernelException("Reduce operands are shorter than their dims");
        for (var o = 0; o < outer; o++)
        {
            var dst = y.Slice(o * inner, inner);
            if (r == 0)
            {
                dst.Fill(kind switch { ReduceKind.Max => float.NegativeInfinity, ReduceKind.Min => float.PositiveInfinity, ReduceKind.Mean => float.NaN, _ => 0f });
                continue;
            }
            var block = x.Slice(o * r * inner, r * inner);
            if (inner == 1)
            {
                dst[0] = kind switch
                {
                    ReduceKind.Sum => TensorPrimitives.Sum(block),
                    ReduceKind.Mean => TensorPrimitives.Sum(block) / r,
                    ReduceKind.Max => TensorPrimitives.Max(block),
                    _ => TensorPrimitives.Min(block),
                };
                continue;
            }
            block[..inner].CopyTo(dst);
            for (var k = 1; k < r; k++)
            {
                var row = block.Slice(k * inner, inner);
                switch (kind)
                {
                    case ReduceKind.Max: TensorPrimitives.Max(dst, row, dst); break;
                    case ReduceKind.Min: TensorPrimitives.Min(dst, row, dst); break;
                    default: TensorPrimitives.Add(dst, row, dst); break;
                }
            }
            if (kind == ReduceKind.Mean) TensorPrimitives.Divide(dst, r, dst);
        }
    }
}
