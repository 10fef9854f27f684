using System.Numerics;

namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code (moving data: Range, row gathers, Transpose, Concat and the KV-cache append); see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>y[i] = start + i·delta.</summary>
    public static void Range<T>(T start, T delta, Span<T> y) where T : unmanaged, INumberBase<T>
    {
        var v = start;
        for (var i = 0; i < y.Length; i++, v += delta) y[i] = v;
    }

    /// <summary>Rows of a table ([rows, rowLength]) picked by index (negative counts from the end): embedding lookup.</summary>
    public static void GatherRows<T>(ReadOnlySpan<T> table, int rows, int rowLength, ReadOnlySpan<long> indices, Span<T> y) where T : unmanaged
    {
        for (var i = 0; i < indices.Length; i++)
        {
            var r = indices[i] < 0 ? indices[i] + rows : indices[i];
            if ((ulong)r >= (ulong)rows) throw new KernelException($"Gather index {indices[i]} is out of range for {rows} rows");
            table.Slice((int)r * rowLength, rowLength).CopyTo(y.Slice(i * rowLength, rowLength));
        }
    }

    /// <summary>
    /// Gather along a middle axis of x viewed as [outer, axis, inner]: y [outer, indices, inner] (negative indices
    /// count from the end).
    /// </summary>
    public static void GatherAxis<T>(ReadOnlySpan<T> x, int outer, int axis, int inner, ReadOnlySpan<long> indices, Span<T> y) where T : unmanaged
    {
        for (var i = 0; i < indices.Length; i++)
            if (indices[i] < -axis || indices[i] >= axis) throw new KernelException($"Gather index {indices[i]} is out of range for {axis} entries");
        for (var o = 0; o < outer; o++)
            for (var i = 0; i < indices.Length; i++)
            {
                var r = indices[i] < 0 ? indices[i] + axis : indices[i];
                x.Slice((int)((o * axis + r) * inner), inner).CopyTo(y.Slice((o * indices.Length + i) * inner, inner));
            }
    }

    /// <summary>
    /// Constant Pad: y is <paramref name="value"/> everywhere except x's elements, placed after
    /// <paramref name="before"/>[d] padding elements on each axis d (y's dims, the plan's, give the padding after).
    /// </summary>
    public static void Pad<T>(ReadOnlySpan<T> x, ReadOnlySpan<int> xShape, ReadOnlySpan<long> before, T value, Span<T> y, ReadOnlySpan<int> yShape) where T : unmanaged
    {
        var rank = xShape.Length;
        if (rank > MaxRank || rank == 0) throw new KernelException($"planned Pad takes rank 1 to {MaxRank}, got {rank}");
        for (var d = 0; d < rank; d++)
            if (before[d] < 0 || before[d] + xShape[d] > yShape[d]) throw new KernelException($"Pad places [{string.Join(", ", xShape.ToArray())}] outside [{string.Join(", ", yShape.ToArray())}]");
        y.Fill(value);
        if (x.Length == 0) return;
        Span<long> ys = stackalloc long[MaxRank];
        RowMajorStrides(yShape, ys);
        long at = 0;
        for (var d = 0; d < rank; d++) at += before[d] * ys[d];
        var inner = xShape[rank - 1];
        Span<int> index = stackalloc int[MaxRank];
        index.Clear();
        for (var o = 0; o < x.Length; o += inner)
        {
            x.Slice(o, inner).CopyTo(y.Slice((int)at, inner));
            for (var d = rank - 2; d >= 0; d--)
            {
                at += ys[d];
                if (++index[d] < xShape[d]) break;
                at -= ys[d] * xShape[d];
                index[d] = 0;
            }
        }
    }

    /// <summary>y = x with its axes permuted (y's axis i is x's axis perm[i]).</summary>
    public static void Transpose<T>(ReadOnlySpan<T> x, ReadOnlySpan<int> shape, ReadOnlySpan<int> perm, Span<T> y) where T : unmanaged
    {
        var rank = shape.Length;
        if (rank > MaxRank) throw new KernelException($"planned kernels take rank ≤ {MaxRank}, got {rank}");
        Span<long> xs = stackalloc long[MaxRank];
        RowMajorStrides(shape, xs);
        Span<long> src = stackalloc long[MaxRank];
        Span<int> ys = stackalloc int[MaxRank];
        for (var d = 0; d < rank; d++) { src[d] = xs[perm[d]]; ys[d] = shape[perm[d]]; }
        if (rank == 0) { x.CopyTo(y); return; }
        StridedCopy(x, 0, src[..rank], y, ys[..rank]);
    }

    /// <summary>Element strides of a row-major tensor of <paramref name="shape"/>.</summary>
    private static void RowMajorStrides(ReadOnlySpan<int> shape, Span<long> strides)
    {
        long acc = 1;
        for (var d = shape.Length - 1; d >= 0; d--) { strides[d] = acc; acc *= shape[d]; }
    }

    /// <summary>
    /// Fills y row by row (its last axis) from x read at <paramref name="origin"/> with element strides
    /// <paramref name="strides"/> per axis of y: a permutation's strides (Transpose) or a slice's steps (Slice).
    /// </summary>
    private static void StridedCopy<T>(ReadOnlySpan<T> x, long origin, ReadOnlySpan<long> strides, Span<T> y, ReadOnlySpan<int> yShape) where T : unmanaged
    {
        var rank = yShape.Length;
        var inner = yShape[rank - 1];
        var innerStride = strides[rank - 1];
        Span<int> index = stackalloc int[MaxRank];
        index.Clear();
        var ix = origin;
        for (var o = 0; o < y.Length; o += inner)
        {
            if (innerStride == 1) x.Slice((int)ix, inner).CopyTo(y.Slice(o, inner));
            else for (var j = 0; j < inner; j++) y[o + j] = x[(int)(ix + j * innerStride)];
            for (var d = rank - 2; d >= 0; d--)
            {
                ix += strides[d];
                if (++index[d] < yShape[d]) break;
                ix -= strides[d] * yShape[d];
                index[d] = 0;
            }
        }
    }

    /// <summary>Copies one Split output out of x: <paramref name="outer"/> blocks of <paramref name="part"/> elements, from <paramref name="offset"/> within each input block of <paramref name="block"/>.</summary>
    public static void SplitPart<T>(ReadOnlySpan<T> x, int outer, int block, int offset, Span<T> y, int part) where T : unmanaged
    {
        for (var o = 0; o < outer; o++) x.Slice(o * block + offset, part).CopyTo(y.Slice(o * part, part));
    }

    /// <summary>
    /// ONNX Slice: <paramref name="starts"/> on <paramref name="axes"/> (empty: the first axes) with
    /// <paramref name="steps"/> (empty: 1), negative starts counting from the end and clamped as the operator does;
    /// y's dims (the plan's) say how many elements each axis takes.
    /// </summary>
    public static void Slice<T>(ReadOnlySpan<T> x, ReadOnlySpan<int> xShape, ReadOnlySpan<long> starts, ReadOnlySpan<long> axes, ReadOnlySpan<long> steps, Span<T> y, ReadOnlySpan<int> yShape)
        where T : unmanaged
    {
        var rank = xShape.Length;
        if (rank > MaxRank || rank == 0) throw new KernelException($"planned Slice takes rank 1 to {MaxRank}, got {rank}");
        Span<long> from = stackalloc long[MaxRank];
        Span<long> step = stackalloc long[MaxRank];
        from.Clear();
        step.Fill(1);
        for (var i = 0; i < starts.Length; i++)
        {
            var axis = (int)(axes.Length > 0 ? axes[i] : i);
            if (axis < 0) axis += rank;
            var s = steps.Length > 0 ? steps[i] : 1;
            var dim = xShape[axis];
            var start = starts[i] < 0 ? starts[i] + dim : starts[i];
            from[axis] = s > 0 ? Math.Clamp(start, 0, dim) : Math.Clamp(start, 0, Math.Max(0, dim - 1));
            step[axis] = s;
        }
        if (y.Length == 0) return;
        Span<long> xs = stackalloc long[MaxRank];
        RowMajorStrides(xShape, xs);
        long origin = 0;
        for (var d = 0; d < rank; d++)
        {
            origin += from[d] * xs[d];
            xs[d] *= step[d];
        }
        StridedCopy(x, origin, xs[..rank], y, yShape);
    }

    /// <summary>Copies one Concat input into its place: <paramref name="outer"/> blocks of <paramref name="part"/> elements, at <paramref name="offset"/> within each output block of <paramref name="block"/>.</summary>
    public static void ConcatPart<T>(ReadOnlySpan<T> x, int outer, int part, Span<T> y, int block, int offset) where T : unmanaged
    {
        for (var o = 0; o < outer; o++) x.Slice(o * part, part).CopyTo(y.Slice(o * block + offset, part));
    }

    /// <summary>Writes new keys or values [b, kvh, seq, d] into a cache laid out [b, kvh, capacity, d] after its first <paramref name="past"/> positions.</summary>
    public static void KvAppend(ReadOnlySpan<float> x, Span<float> cache, int heads, int seq, int d, int past, int capacity)
    {
        if (past + seq > capacity) throw new KernelException($"the KV cache holds {capacity} positions; {past} + {seq} do not fit");
        for (var h = 0; h < heads; h++)
            x.Slice(h * seq * d, seq * d).CopyTo(cache.Slice((h * capacity + past) * d, seq * d));
    }
}
