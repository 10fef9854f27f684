using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code for the normalization family (Softmax, LayerNormalization); see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>Softmax (or LogSoftmax) of each row of n elements, the max subtracted first (exp of large logits would overflow).</summary>
    public static void Softmax(ReadOnlySpan<float> x, Span<float> y, int n, bool log)
    {
        if (n == 0) return;
        for (var at = 0; at < x.Length; at += n)
        {
            var row = x.Slice(at, n);
            var dst = y.Slice(at, n);
            var max = TensorPrimitives.Max(row);
            TensorPrimitives.Subtract(row, max, dst);
            if (log)
            {
                // log Σ exp(x − max), summed in double as the operator entry does.
                double sum = 0;
                foreach (var v in dst) sum += Math.Exp(v);
                TensorPrimitives.Subtract(dst, (float)Math.Log(sum), dst);
                continue;
            }
            TensorPrimitives.Exp(dst, dst);
            TensorPrimitives.Divide(dst, TensorPrimitives.Sum(dst), dst);
        }
    }

    /// <summary>
    /// Layer normalization of each row of n elements: (x − mean) / sqrt(var + ε), times scale and plus bias (each n
    /// elements, or one, or absent).
    /// </summary>
    public static void LayerNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> scale, ReadOnlySpan<float> bias, Span<float> y, int n, float epsilon)
    {
        if (n == 0) return;
        for (var at = 0; at < x.Length; at += n)
        {
            var row = x.Slice(at, n);
            var dst = y.Slice(at, n);
            var mean = TensorPrimitives.Sum(row) / n;
            TensorPrimitives.Subtract(row, mean, dst);
            var variance = TensorPrimitives.SumOfSquares((ReadOnlySpan<float>)dst) / n;
            TensorPrimitives.Multiply(dst, 1f / MathF.Sqrt(variance + epsilon), dst);
            if (scale.Length == n) TensorPrimitives.Multiply(dst, scale, dst);
            else if (scale.Length == 1) TensorPrimitives.Multiply(dst, scale[0], dst);
            if (bias.Length == n) TensorPrimitives.Add(dst, bias, dst);
            else if (bias.Length == 1) TensorPrimitives.Add(dst, bias[0], dst);
        }
    }
}
