using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

public enum ReduceKind { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare }

/// <summary>
/// Reductions over any set of axes. The reduced axes are moved innermost (a transpose when they are not already),
/// so each output element reduces one contiguous row: f32 rows go through TensorPrimitives (vectorized), other
/// types accumulate in double (floats) or long (integers) so results are exact where the type allows.
/// </summary>
public static class Reduce
{
    public static Tensor Run(Tensor x, int[] axes, bool keepDims, ReduceKind kind)
    {
        var rank = x.Rank;
        var reduce = new bool[rank];
        foreach (var a in axes) reduce[a] = true;
        var kept = Enumerable.Range(0, rank).Where(i => !reduce[i]).ToArray();
        var red = Enumerable.Range(0, rank).Where(i => reduce[i]).ToArray();
        var perm = kept.Concat(red).ToArray();
        var xt = perm.SequenceEqual(Enumerable.Range(0, rank)) ? x : Movement.Transpose(x, perm);
        var outer = (int)Tensor.Count(kept.Select(i => x.Shape[i]).ToArray());
        var inner = (int)Tensor.Count(red.Select(i => x.Shape[i]).ToArray());
        var shape = keepDims ? x.Shape.Select((d, i) => reduce[i] ? 1 : d).ToArray() : kept.Select(i => x.Shape[i]).ToArray();
        if (inner == 0 && kind is ReduceKind.Max or ReduceKind.Min && outer > 0 && !x.Type.IsFloat())
            throw new KernelException($"Reduce{kind} over an empty axis has no value");
        if (x.Type == DType.F32)
        {
            var r = Tensor.Uninitialized(DType.F32, shape);
            var s = xt.Span<float>();
            var o = r.Span<float>();
            for (var i = 0; i < outer; i++) o[i] = RowF32(s.Slice(i * inner, inner), kind);
            return r;
        }
        if (x.Type.IsFloat())
        {
            var vals = new double[outer];
            for (var i = 0; i < outer; i++) vals[i] = RowDouble(xt, (long)i * inner, inner, kind);
            return Movement.FromDoubles(x.Type, shape, vals);
        }
        if (x.Type == DType.Bool || x.Type.IsInteger())
        {
            var vals = new long[outer];
            for (var i = 0; i < outer; i++) vals[i] = RowLong(xt, (long)i * inner, inner, kind);
            return Cast.To(Tensor.FromArray(DType.I64, shape, vals), x.Type);
        }
        throw Elementwise.Unsupported("Reduce" + kind, x.Type);
    }

    private static float RowF32(ReadOnlySpan<float> row, ReduceKind kind)
    {
        if (row.Length == 0)
            return kind switch
            {
                ReduceKind.Max => float.NegativeInfinity,
                ReduceKind.Min => float.PositiveInfinity,
                ReduceKind.Prod => 1,
                ReduceKind.LogSum or ReduceKind.LogSumExp => float.NegativeInfinity,
                ReduceKind.Mean => float.NaN,
                _ => 0,
            };
        switch (kind)
        {
            case ReduceKind.Sum: return TensorPrimitives.Sum(row);
            case ReduceKind.Mean: return TensorPrimitives.Sum(row) / row.Length;
            case ReduceKind.Max: return TensorPrimitives.Max(row);
            case ReduceKind.Min: return TensorPrimitives.Min(row);
            case ReduceKind.Prod: return TensorPrimitives.Product(row);
            case ReduceKind.L1: return TensorPrimitives.SumOfMagnitudes(row);
            case ReduceKind.L2: return MathF.Sqrt(TensorPrimitives.SumOfSquares(row));
            case ReduceKind.SumSquare: return TensorPrimitives.SumOfSquares(row);
            case ReduceKind.LogSum: return MathF.Log(TensorPrimitives.Sum(row));
            default:
                {
                    var m = TensorPrimitives.Max(row);
                    if (float.IsInfinity(m)) return m;
                    double s = 0;
                    foreach (var v in row) s += Math.Exp(v - m);
                    return (float)(m + Math.Log(s));
                }
        }
    }

    private static double RowDouble(Tensor t, long start, int n, ReduceKind kind)
    {
        double acc = kind switch { ReduceKind.Max => double.NegativeInfinity, ReduceKind.Min => double.PositiveInfinity, ReduceKind.Prod => 1, _ => 0 };
        double max = double.NegativeInfinity;
        if (kind == ReduceKind.LogSumExp)
            for (var i = 0; i < n; i++) max = Math.Max(max, t.GetDouble(start + i));
        for (var i = 0; i < n; i++)
        {
            var v = t.GetDouble(start + i);
            acc = kind switch
            {
                ReduceKind.Sum or ReduceKind.Mean or ReduceKind.LogSum => acc + v,
                ReduceKind.Max => double.IsNaN(v) ? v : Math.Max(acc, v),
                ReduceKind.Min => double.IsNaN(v) ? v : Math.Min(acc, v),
                ReduceKind.Prod => acc * v,
                ReduceKind.L1 => acc + Math.Abs(v),
                ReduceKind.L2 or ReduceKind.SumSquare => acc + v * v,
                _ => acc + Math.Exp(v - max),
            };
        }
        return kind switch
        {
            ReduceKind.Mean => acc / n,
            ReduceKind.L2 => Math.Sqrt(acc),
            ReduceKind.LogSum => Math.Log(acc),
            ReduceKind.LogSumExp => n == 0 ? double.NegativeInfinity : double.IsInfinity(max) ? max : max + Math.Log(acc),
            _ => acc,
        };
    }

    private static long RowLong(Tensor t, long start, int n, ReduceKind kind)
    {
        if (kind is ReduceKind.LogSum or ReduceKind.LogSumExp or ReduceKind.L2)
            return (long)Math.Floor(RowDouble(t, start, n, kind));
        long acc = kind switch { ReduceKind.Max => long.MinValue, ReduceKind.Min => long.MaxValue, ReduceKind.Prod => 1, _ => 0 };
        for (var i = 0; i < n; i++)
        {
            var v = t.GetLong(start + i);
            unchecked
            {
                acc = kind switch
                {
                    ReduceKind.Sum or ReduceKind.Mean => acc + v,
                    ReduceKind.Max => Math.Max(acc, v),
                    ReduceKind.Min => Math.Min(acc, v),
                    ReduceKind.Prod => acc * v,
                    ReduceKind.L1 => acc + Math.Abs(v),
                    _ => acc + v * v,
                };
            }
        }
        return kind == ReduceKind.Mean && n > 0 ? acc / n : acc;
    }

    /// <summary>ArgMax / ArgMin along one axis (first occurrence unless <paramref name="selectLast"/>).</summary>
    public static Tensor ArgExtreme(Tensor x, int axis, bool keepDims, bool selectLast, bool max)
    {
        var outer = (int)Tensor.Count(x.Shape[..axis]);
        var dim = x.Shape[axis];
        var inner = (int)Tensor.Count(x.Shape[(axis + 1)..]);
        var shape = keepDims ? x.Shape.Select((d, i) => i == axis ? 1 : d).ToArray() : x.Shape.Where((_, i) => i != axis).ToArray();
        var r = new long[(long)outer * inner];
        for (var o = 0; o < outer; o++)
            for (var i = 0; i < inner; i++)
            {
                var best = 0;
                var bv = x.GetDouble((long)o * dim * inner + i);
                for (var k = 1; k < dim; k++)
                {
                    var v = x.GetDouble(((long)o * dim + k) * inner + i);
                    var better = max ? (selectLast ? v >= bv : v > bv) : (selectLast ? v <= bv : v < bv);
                    if (better) { best = k; bv = v; }
                }
                r[(long)o * inner + i] = best;
            }
        return Tensor.FromArray(DType.I64, shape, r);
    }
}
