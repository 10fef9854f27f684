using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Kiln.Runtime.Kernels;

/// <summary>Elementwise operations <see cref="ArenaKernels.Binary{T, TOp}"/> applies.</summary>
public interface IBinaryOp<T>
{
    static abstract T Apply(T a, T b);
}

public readonly struct AddOp<T> : IBinaryOp<T> where T : INumberBase<T> { public static T Apply(T a, T b) => a + b; }
public readonly struct SubOp<T> : IBinaryOp<T> where T : INumberBase<T> { public static T Apply(T a, T b) => a - b; }
public readonly struct MulOp<T> : IBinaryOp<T> where T : INumberBase<T> { public static T Apply(T a, T b) => a * b; }
public readonly struct DivOp<T> : IBinaryOp<T> where T : INumberBase<T> { public static T Apply(T a, T b) => a / b; }

/// <summary>
/// Kernels the planned code of compiled models calls: they read spans and write into spans the caller owns (slots
/// of the model's activation arena, output tensors, the KV cache) and allocate nothing. Shapes arrive as spans
/// (stack-allocated by the caller); rank is at most 8.
/// </summary>
public static unsafe partial class ArenaKernels
{
    private const int MaxRank = 8;

    /// <summary>y = op(a, b) with NumPy broadcasting to y's shape.</summary>
    public static void Binary<T, TOp>(ReadOnlySpan<T> a, ReadOnlySpan<int> aShape, ReadOnlySpan<T> b, ReadOnlySpan<int> bShape, Span<T> y, ReadOnlySpan<int> yShape)
        where T : unmanaged, INumberBase<T> where TOp : IBinaryOp<T>
    {
        if (a.Length == y.Length && b.Length == y.Length)
        {
            if (typeof(T) == typeof(float) && Vectorized<TOp>(MemoryMarshal.Cast<T, float>(a), MemoryMarshal.Cast<T, float>(b), MemoryMarshal.Cast<T, float>(y))) return;
            for (var i = 0; i < y.Length; i++) y[i] = TOp.Apply(a[i], b[i]);
            return;
        }
        if (b.Length == 1 && a.Length == y.Length)
        {
            var s = b[0];
            for (var i = 0; i < y.Length; i++) y[i] = TOp.Apply(a[i], s);
            return;
        }
        Span<long> sa = stackalloc long[MaxRank];
        Span<long> sb = stackalloc long[MaxRank];
        var rank = BroadcastStrides(aShape, yShape, sa);
        BroadcastStrides(bShape, yShape, sb);
        // The run: the longest suffix of y's dims over which each operand is whole (its dims are y's there, so
        // contiguous) or one value (its dims are 1): a per-channel bias or scale over [n, c, h, w] runs h·w at a time.
        var (run, k) = (1, rank);
        bool aWhole = true, aOne = true, bWhole = true, bOne = true;
        for (var d = rank - 1; d >= 0; d--)
        {
            int ad = d - (rank - aShape.Length) >= 0 ? aShape[d - (rank - aShape.Length)] : 1, bd = d - (rank - bShape.Length) >= 0 ? bShape[d - (rank - bShape.Length)] : 1;
            bool aw = aWhole && ad == yShape[d], ao = aOne && ad == 1, bw = bWhole && bd == yShape[d], bo = bOne && bd == 1;
            if (!(aw || ao) || !(bw || bo)) break;
            (aWhole, aOne, bWhole, bOne) = (aw, ao, bw, bo);
            run *= yShape[d];
            k = d;
        }
        if (run >= 8 && typeof(T) == typeof(float))
        {
            var af = MemoryMarshal.Cast<T, float>(a);
            var bf = MemoryMarshal.Cast<T, float>(b);
            var yf = MemoryMarshal.Cast<T, float>(y);
            Span<int> at = stackalloc int[MaxRank];
            at.Clear();
            long ra = 0, rb = 0;
            for (var o = 0; o < y.Length; o += run)
            {
                FloatRun<TOp>(aWhole ? af.Slice((int)ra, run) : af.Slice((int)ra, 1), aWhole, bWhole ? bf.Slice((int)rb, run) : bf.Slice((int)rb, 1), bWhole, yf.Slice(o, run));
                for (var d = k - 1; d >= 0; d--)
                {
                    ra += sa[d]; rb += sb[d];
                    if (++at[d] < yShape[d]) break;
                    ra -= sa[d] * yShape[d]; rb -= sb[d] * yShape[d];
                    at[d] = 0;
                }
            }
            return;
        }
        Span<int> index = stackalloc int[MaxRank];
        index.Clear();
        var inner = rank == 0 ? 1 : yShape[rank - 1];
        long ia = 0, ib = 0;
        long sai = rank == 0 ? 0 : sa[rank - 1], sbi = rank == 0 ? 0 : sb[rank - 1];
        for (var o = 0; o < y.Length; o += inner)
        {
            var yr = y.Slice(o, inner);
            for (var j = 0; j < inner; j++) yr[j] = TOp.Apply(a[(int)(ia + j * sai)], b[(int)(ib + j * sbi)]);
            for (var d = rank - 2; d >= 0; d--)
            {
                ia += sa[d]; ib += sb[d];
                if (++index[d] < yShape[d]) break;
                ia -= sa[d] * yShape[d]; ib -= sb[d] * yShape[d];
                index[d] = 0;
            }
        }
    }

    /// <summary>One run of f32 elements: each operand a whole span or one value (scalar-first Sub and Div included).</summary>
    private static void FloatRun<TOp>(ReadOnlySpan<float> a, bool aWhole, ReadOnlySpan<float> b, bool bWhole, Span<float> y)
    {
        if (aWhole && bWhole && Vectorized<TOp>(a, b, y)) return;
        if (aWhole && !bWhole)
        {
            var s = b[0];
            if (typeof(TOp) == typeof(AddOp<float>)) TensorPrimitives.Add(a, s, y);
            else if (typeof(TOp) == typeof(SubOp<float>)) TensorPrimitives.Subtract(a, s, y);
            else if (typeof(TOp) == typeof(MulOp<float>)) TensorPrimitives.Multiply(a, s, y);
            else if (typeof(TOp) == typeof(DivOp<float>)) TensorPrimitives.Divide(a, s, y);
            return;
        }
        if (!aWhole && bWhole)
        {
            var s = a[0];
            if (typeof(TOp) == typeof(AddOp<float>)) TensorPrimitives.Add(b, s, y);
            else if (typeof(TOp) == typeof(SubOp<float>)) TensorPrimitives.Subtract(s, b, y);
            else if (typeof(TOp) == typeof(MulOp<float>)) TensorPrimitives.Multiply(b, s, y);
            else if (typeof(TOp) == typeof(DivOp<float>)) TensorPrimitives.Divide(s, b, y);
            return;
        }
        var v = a[0];
        var w = b[0];
        y.Fill(typeof(TOp) == typeof(AddOp<float>) ? v + w : typeof(TOp) == typeof(SubOp<float>) ? v - w : typeof(TOp) == typeof(MulOp<float>) ? v * w : v / w);
    }

    private static bool Vectorized<TOp>(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (typeof(TOp) == typeof(AddOp<float>)) TensorPrimitives.Add(a, b, y);
        else if (typeof(TOp) == typeof(SubOp<float>)) TensorPrimitives.Subtract(a, b, y);
        else if (typeof(TOp) == typeof(MulOp<float>)) TensorPrimitives.Multiply(a, b, y);
        else if (typeof(TOp) == typeof(DivOp<float>)) TensorPrimitives.Divide(a, b, y);
        else return false;
        return true;
    }

    /// <summary>Element strides of a tensor of <paramref name="shape"/> read as <paramref name="to"/> (0 on broadcast axes); returns the rank of <paramref name="to"/>.</summary>
    private static int BroadcastStrides(ReadOnlySpan<int> shape, ReadOnlySpan<int> to, Span<long> strides)
    {
        if (to.Length > MaxRank) throw new KernelException($"planned kernels take rank ≤ {MaxRank}, got {to.Length}");
        long acc = 1;
        for (var d = to.Length - 1; d >= 0; d--)
        {
            var sd = d - (to.Length - shape.Length);
            var n = sd >= 0 ? shape[sd] : 1;
            if (n != 1 && n != to[d])
                throw new KernelException($"an operand of shape [{string.Join(", ", shape.ToArray())}] does not broadcast to [{string.Join(", ", to.ToArray())}]");
            strides[d] = n == 1 ? 0 : acc;
            acc *= n;
        }
        return to.Length;
    }

    /// <summary>y = a ⋄ b (bool as bytes) with broadcasting, ⋄ one of the ONNX comparisons.</summary>
    public static void Compare<T>(ReadOnlySpan<T> a, ReadOnlySpan<int> aShape, ReadOnlySpan<T> b, ReadOnlySpan<int> bShape, Span<byte> y, ReadOnlySpan<int> yShape, Comparison op)
        where T : unmanaged, INumber<T>
    {
        Span<long> sa = stackalloc long[MaxRank];
        Span<long> sb = stackalloc long[MaxRank];
        var rank = BroadcastStrides(aShape, yShape, sa);
        BroadcastStrides(bShape, yShape, sb);
        for (var i = 0; i < y.Length; i++)
        {
            long ia = 0, ib = 0, rest = i;
            for (var d = rank - 1; d >= 0; d--)
            {
                var k = rest % yShape[d];
                rest /= yShape[d];
                ia += k * sa[d]; ib += k * sb[d];
            }
            var (l, r) = (a[(int)ia], b[(int)ib]);
            var holds = op switch
            {
                Comparison.Greater => l > r,
                Comparison.Less => l < r,
                Comparison.GreaterOrEqual => l >= r,
                Comparison.LessOrEqual => l <= r,
                _ => l == r,
            };
            y[i] = holds ? (byte)1 : (byte)0;
        }
    }

    /// <summary>y = condition ? x : z with broadcasting.</summary>
    public static void Where<T>(ReadOnlySpan<byte> c, ReadOnlySpan<int> cShape, ReadOnlySpan<T> x, ReadOnlySpan<int> xShape, ReadOnlySpan<T> z, ReadOnlySpan<int> zShape, Span<T> y, ReadOnlySpan<int> yShape)
        where T : unmanaged
    {
        Span<long> sc = stackalloc long[MaxRank];
        Span<long> sx = stackalloc long[MaxRank];
        Span<long> sz = stackalloc long[MaxRank];
        var rank = BroadcastStrides(cShape, yShape, sc);
        BroadcastStrides(xShape, yShape, sx);
        BroadcastStrides(zShape, yShape, sz);
        for (var i = 0; i < y.Length; i++)
        {
            long ic = 0, ix = 0, iz = 0, rest = i;
            for (var d = rank - 1; d >= 0; d--)
            {
                var k = rest % yShape[d];
                rest /= yShape[d];
                ic += k * sc[d]; ix += k * sx[d]; iz += k * sz[d];
            }
            y[i] = c[(int)ic] != 0 ? x[(int)ix] : z[(int)iz];
        }
    }

    /// <summary>Numeric conversion (floats to integers truncate toward zero, as ONNX Cast does for in-range values).</summary>
    public static void Cast<TFrom, TTo>(ReadOnlySpan<TFrom> x, Span<TTo> y) where TFrom : unmanaged, INumberBase<TFrom> where TTo : unmanaged, INumberBase<TTo>
    {
        for (var i = 0; i < y.Length; i++) y[i] = TTo.CreateTruncating(x[i]);
    }

    /// <summary>y = erf(x), to f32 precision (the operator entry's series).</summary>
    public static void Erf(ReadOnlySpan<float> x, Span<float> y)
    {
        for (var i = 0; i < y.Length; i++) y[i] = (float)SpecialFunctions.Erf(x[i]);
    }
}

/// <summary>The ONNX comparisons a planned <see cref="ArenaKernels.Compare{T}"/> computes.</summary>
public enum Comparison { Greater, Less, Equal, GreaterOrEqual, LessOrEqual }
