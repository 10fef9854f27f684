using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

/// <summary>Softmax family and normalization layers. f32 rows use TensorPrimitives; other float types go through f32/f64.</summary>
public static class Normalization
{
    /// <summary>Softmax, LogSoftmax or Hardmax along one axis (opset 13 semantics).</summary>
    public static Tensor Softmax(Tensor x, int axis, string kind)
    {
        if (!x.Type.IsFloat()) throw Elementwise.Unsupported(kind, x.Type);
        if (x.Type != DType.F32) return Cast.To(Softmax(Cast.To(x, DType.F32), axis, kind), x.Type);
        var rank = x.Rank;
        var last = axis == rank - 1 || rank == 0;
        int[]? perm = null;
        var xt = x;
        if (!last)
        {
            perm = Enumerable.Range(0, rank).Where(i => i != axis).Append(axis).ToArray();
            xt = Movement.Transpose(x, perm);
        }
        var n = rank == 0 ? 1 : xt.Shape[^1];
        var r = Tensor.Uninitialized(DType.F32, xt.Shape);
        var s = xt.Span<float>();
        var o = r.Span<float>();
        if (n > 0)
            for (var i = 0; i < s.Length; i += n)
            {
                var row = s.Slice(i, n);
                var dst = o.Slice(i, n);
                switch (kind)
                {
                    case "Softmax":
                        {
                            // TensorPrimitives.SoftMax does not subtract the max first, so large inputs overflow.
                            var m = TensorPrimitives.Max(row);
                            TensorPrimitives.Subtract(row, m, dst);
                            TensorPrimitives.Exp(dst, dst);
                            TensorPrimitives.Divide(dst, TensorPrimitives.Sum(dst), dst);
                            break;
                        }
                    case "LogSoftmax":
                        {
                            var m = TensorPrimitives.Max(row);
                            double sum = 0;
                            foreach (var v in row) sum += Math.Exp(v - m);
                            var lse = (float)(m + Math.Log(sum));
                            TensorPrimitives.Subtract(row, lse, dst);
                            break;
                        }
                    default:
                        dst.Clear();
                        dst[TensorPrimitives.IndexOfMax(row)] = 1;
                        break;
                }
            }
        if (perm is null) return r;
        var inv = new int[rank];
        for (var i = 0; i < rank; i++) inv[perm[i]] = i;
        return Movement.Transpose(r, inv);
    }

    /// <summary>Normalizes each row of the last <paramref name="rowLength"/> elements: y = (x-mean)/sqrt(var+eps) (RMS form when <paramref name="rms"/>), then scale and bias (broadcast).</summary>
    public static (Tensor Y, Tensor Mean, Tensor InvStd) LayerNorm(Tensor x, int axis, float epsilon, Tensor? scale, Tensor? bias, bool rms = false)
    {
        var orig = x.Type;
        if (x.Type != DType.F32) x = Cast.To(x, DType.F32);
        var rowLength = (int)Tensor.Count(x.Shape[axis..]);
        var rows = (int)Tensor.Count(x.Shape[..axis]);
        var r = Tensor.Uninitialized(DType.F32, x.Shape);
        var statShape = x.Shape.Select((d, i) => i < axis ? d : 1).ToArray();
        var mean = Tensor.Uninitialized(DType.F32, statShape);
        var inv = Tensor.Uninitialized(DType.F32, statShape);
        var s = x.Span<float>();
        var o = r.Span<float>();
        for (var i = 0; i < rows; i++)
        {
            var row = s.Slice(i * rowLength, rowLength);
            double m = 0;
            if (!rms)
            {
                foreach (var v in row) m += v;
                m /= rowLength;
            }
            double var = 0;
            foreach (var v in row) var += (v - m) * (v - m);
            var /= rowLength;
            var invStd = 1 / Math.Sqrt(var + epsilon);
            mean.Span<float>()[i] = (float)m;
            inv.Span<float>()[i] = (float)invStd;
            var dst = o.Slice(i * rowLength, rowLength);
            TensorPrimitives.Subtract(row, (float)m, dst);
            TensorPrimitives.Multiply(dst, (float)invStd, dst);
        }
        Tensor y = r;
        if (scale is not null) y = Elementwise.Numeric<Elementwise.MulOp>(y, Cast.To(scale, DType.F32));
        if (bias is not null) y = Elementwise.Numeric<Elementwise.AddOp>(y, Cast.To(bias, DType.F32));
        return (Cast.To(y, orig), mean, inv);
    }

    /// <summary>y = scale·(x − mean)/sqrt(var + ε) + bias per channel (axis 1).</summary>
    public static Tensor ChannelAffine(Tensor x, double[] mean, double[] var, double[] scale, double[] bias, double epsilon)
    {
        var orig = x.Type;
        if (x.Type != DType.F32) x = Cast.To(x, DType.F32);
        var n = x.Shape[0];
        var ch = x.Rank > 1 ? x.Shape[1] : 1;
        var inner = (int)Tensor.Count(x.Shape[Math.Min(2, x.Rank)..]);
        var r = Tensor.Uninitialized(DType.F32, x.Shape);
        var s = x.Span<float>();
        var o = r.Span<float>();
        for (var b = 0; b < n; b++)
            for (var c = 0; c < ch; c++)
            {
                var mul = (float)(scale[c] / Math.Sqrt(var[c] + epsilon));
                var add = (float)(bias[c] - mean[c] * scale[c] / Math.Sqrt(var[c] + epsilon));
                var at = (b * ch + c) * inner;
                TensorPrimitives.Multiply(s.Slice(at, inner), mul, o.Slice(at, inner));
                TensorPrimitives.Add(o.Slice(at, inner), add, o.Slice(at, inner));
            }
        return Cast.To(r, orig);
    }

    /// <summary>Per-channel mean and (population) variance over batch and spatial dims.</summary>
    public static (double[] Mean, double[] Var) ChannelStats(Tensor x)
    {
        var n = x.Shape[0];
        var ch = x.Shape[1];
        var inner = (int)Tensor.Count(x.Shape[2..]);
        var mean = new double[ch];
        var var = new double[ch];
        for (var c = 0; c < ch; c++)
        {
            double s = 0, s2 = 0;
            for (var b = 0; b < n; b++)
                for (var i = 0; i < inner; i++)
                {
                    var v = x.GetDouble(((long)b * ch + c) * inner + i);
                    s += v;
                    s2 += v * v;
                }
            var cnt = (double)n * inner;
            mean[c] = s / cnt;
            var[c] = s2 / cnt - mean[c] * mean[c];
        }
        return (mean, var);
    }

    /// <summary>Local response normalization across channels.</summary>
    public static Tensor Lrn(Tensor x, int size, double alpha, double beta, double bias)
    {
        var n = x.Shape[0];
        var ch = x.Shape[1];
        var inner = (int)Tensor.Count(x.Shape[2..]);
        var r = new double[x.Length];
        for (var b = 0; b < n; b++)
            for (var c = 0; c < ch; c++)
                for (var i = 0; i < inner; i++)
                {
                    double sq = 0;
                    var lo = Math.Max(0, c - (size - 1) / 2);
                    var hi = Math.Min(ch - 1, c + (int)Math.Ceiling((size - 1) / 2.0));
                    for (var k = lo; k <= hi; k++)
                    {
                        var v = x.GetDouble(((long)b * ch + k) * inner + i);
                        sq += v * v;
                    }
                    var at = ((long)b * ch + c) * inner + i;
                    r[at] = x.GetDouble(at) / Math.Pow(bias + alpha / size * sq, beta);
                }
        return Movement.FromDoubles(x.Type, x.Shape, r);
    }
}
