namespace Kiln.Runtime.Kernels;

/// <summary>Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear (per tensor, per axis or per block).</summary>
public static class Quantize
{
    /// <summary>Expands a scale / zero-point tensor to x's shape (scalar, 1-D per axis, or blocked along axis).</summary>
    private static double[] Spread(Tensor p, int[] shape, int axis, int blockSize)
    {
        var v = p.ToDoubles();
        var n = Tensor.Count(shape);
        var r = new double[n];
        if (p.Length == 1) { Array.Fill(r, v[0]); return r; }
        var strides = Tensor.Strides(shape);
        var pStrides = Tensor.Strides(p.Shape);
        for (long i = 0; i < n; i++)
        {
            if (p.Rank == 1 && blockSize == 0)
            {
                r[i] = v[i / strides[axis] % shape[axis]];
                continue;
            }
            long off = 0, rem = i;
            for (var d = 0; d < shape.Length; d++)
            {
                var idx = rem / strides[d];
                rem %= strides[d];
                if (d == axis && blockSize > 0) idx /= blockSize;
                off += idx * pStrides[d];
            }
            r[i] = v[off];
        }
        return r;
    }

    /// <summary>y = clamp(round_half_even(x / scale) + zero_point) into the integer range of <paramref name="outType"/>.</summary>
    public static Tensor Linear(Tensor x, Tensor scale, Tensor? zeroPoint, int axis, int blockSize, DType outType)
    {
        var s = Spread(scale, x.Shape, axis, blockSize);
        var z = zeroPoint is null ? new double[s.Length] : Spread(zeroPoint, x.Shape, axis, blockSize);
        var (lo, hi) = Range(outType);
        var r = new double[s.Length];
        for (long i = 0; i < r.Length; i++)
        {
            var q = Math.Round(x.GetDouble(i) / s[i], MidpointRounding.ToEven) + z[i];
            r[i] = Math.Clamp(q, lo, hi);
        }
        return Movement.FromDoubles(outType, x.Shape, r);
    }

    public static Tensor Dequantize(Tensor x, Tensor scale, Tensor? zeroPoint, int axis, int blockSize)
    {
        var s = Spread(scale, x.Shape, axis, blockSize);
        var z = zeroPoint is null ? new double[s.Length] : Spread(zeroPoint, x.Shape, axis, blockSize);
        var r = new double[s.Length];
        for (long i = 0; i < r.Length; i++) r[i] = (x.GetDouble(i) - z[i]) * s[i];
        return Movement.FromDoubles(scale.Type, x.Shape, r);
    }

    public static (Tensor Y, Tensor Scale, Tensor ZeroPoint) Dynamic(Tensor x)
    {
        // In float32 throughout, as the ONNX definition computes it (double rounding differs at .5 boundaries).
        var v = Cast.To(x, DType.F32).Span<float>().ToArray();
        var max = Math.Max(0f, v.Length == 0 ? 0f : v.Max());
        var min = Math.Min(0f, v.Length == 0 ? 0f : v.Min());
        var scale = (max - min) / 255f;
        var zp = scale == 0 ? 0f : Math.Clamp(MathF.Round(-min / scale, MidpointRounding.ToEven), 0f, 255f);
        var q = new double[v.Length];
        for (var i = 0; i < v.Length; i++) q[i] = Math.Clamp(MathF.Round(v[i] / (scale == 0 ? 1f : scale), MidpointRounding.ToEven) + zp, 0f, 255f);
        return (Movement.FromDoubles(DType.U8, x.Shape, q), Tensor.Scalar(scale), Tensor.FromArray(DType.U8, [], [(byte)zp]));
    }

    public static (double Lo, double Hi) Range(DType t) => t switch
    {
        DType.U8 => (0, 255), DType.I8 => (-128, 127), DType.U16 => (0, 65535), DType.I16 => (-32768, 32767),
        DType.I32 => (int.MinValue, int.MaxValue), DType.U32 => (0, uint.MaxValue),
        _ => (double.NegativeInfinity, double.PositiveInfinity),
    };
}
