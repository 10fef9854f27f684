using System.Runtime.InteropServices;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// Data movement (shape ops): kernels that only move elements, so they work on raw element bits of any size and
/// on strings alike. Most are written as "output element i comes from input element idx[i]"; Concat and the
/// contiguous Slice/Transpose cases copy whole rows.
/// </summary>
public static class Movement
{
    /// <summary>dst[i] = src[idx[i]] for idx[i] ≥ 0; entries with idx[i] &lt; 0 are left as they are.</summary>
    public static void Take(Tensor src, Tensor dst, ReadOnlySpan<long> idx)
    {
        if (src.Type == DType.String)
        {
            var s = src.Strings;
            var d = dst.Strings;
            for (var i = 0; i < idx.Length; i++) if (idx[i] >= 0) d[i] = s[idx[i]];
            return;
        }
        switch (src.Type.Size())
        {
            case 1: TakeT<byte>(src, dst, idx); break;
            case 2: TakeT<ushort>(src, dst, idx); break;
            case 4: TakeT<uint>(src, dst, idx); break;
            case 8: TakeT<ulong>(src, dst, idx); break;
            default: TakeT<Int128>(src, dst, idx); break;
        }
    }

    private static void TakeT<T>(Tensor src, Tensor dst, ReadOnlySpan<long> idx) where T : unmanaged
    {
        var s = src.Span<T>();
        var d = dst.Span<T>();
        for (var i = 0; i < idx.Length; i++)
        {
            var k = idx[i];
            if (k >= 0) d[i] = s[(int)k];
        }
    }

    /// <summary>A new tensor of <paramref name="shape"/> whose element i is src[idx[i]].</summary>
    public static Tensor Take(Tensor src, int[] shape, ReadOnlySpan<long> idx)
    {
        var r = Tensor.Uninitialized(src.Type, shape);
        Take(src, r, idx);
        return r;
    }

    /// <summary>Calls f for every multi-index of <paramref name="shape"/> in row-major order, with the flat position.</summary>
    public static long[] Indices(int[] shape, Func<int[], long> f)
    {
        var n = Tensor.Count(shape);
        MemoryBudget.Scratch(n, sizeof(long));
        var r = new long[n];
        if (n == 0) return r;
        var idx = new int[shape.Length];
        for (long i = 0; i < n; i++)
        {
            r[i] = f(idx);
            for (var j = shape.Length - 1; j >= 0; j--)
            {
                if (++idx[j] < shape[j]) break;
                idx[j] = 0;
            }
        }
        return r;
    }

    /// <summary>Source offsets of a strided view: offset + Σ idx[k]·strides[k].</summary>
    public static long[] StridedIndices(int[] shape, long[] strides, long offset = 0)
    {
        var n = Tensor.Count(shape);
        MemoryBudget.Scratch(n, sizeof(long));
        var r = new long[n];
        if (n == 0) return r;
        var rank = shape.Length;
        if (rank == 0) { r[0] = offset; return r; }
        var idx = new int[rank];
        var cur = offset;
        var inner = shape[rank - 1];
        var istr = strides[rank - 1];
        long p = 0;
        while (true)
        {
            var c = cur;
            for (var k = 0; k < inner; k++, c += istr) r[p++] = c;
            var j = rank - 2;
            for (; j >= 0; j--)
            {
                idx[j]++;
                cur += strides[j];
                if (idx[j] < shape[j]) break;
                cur -= strides[j] * shape[j];
                idx[j] = 0;
            }
            if (j < 0) return r;
        }
    }

    public static Tensor Transpose(Tensor x, int[] perm)
    {
        var rank = x.Rank;
        if (perm.Length != rank) throw new KernelException($"Transpose perm has {perm.Length} entries for a rank-{rank} tensor");
        var inStrides = Tensor.Strides(x.Shape);
        var shape = new int[rank];
        var strides = new long[rank];
        for (var i = 0; i < rank; i++)
        {
            if (perm[i] < 0 || perm[i] >= rank) throw new KernelException($"Transpose perm entry {perm[i]} is out of range for rank {rank}");
            shape[i] = x.Shape[perm[i]];
            strides[i] = inStrides[perm[i]];
        }
        // Moving only size-1 axes (heads ↔ a one-token sequence) keeps the element order: a view, no copy.
        var previous = -1;
        var order = true;
        for (var i = 0; i < rank && order; i++)
        {
            if (shape[i] == 1) continue;
            order = perm[i] > previous;
            previous = perm[i];
        }
        if (order && x.Type != DType.String) return x.Reshape(shape);
        if (x.Type != DType.String && x.Type.Size() == 4) return StridedCopy32(x, shape, strides, 0);
        return Take(x, shape, StridedIndices(shape, strides));
    }

    /// <summary>A strided view copied out for 4-byte elements, without an index array (the f32 hot path).</summary>
    public static Tensor StridedCopy32(Tensor x, int[] shape, long[] strides, long offset)
    {
        var r = Tensor.Uninitialized(x.Type, shape);
        if (r.Length == 0) return r;
        var s = x.Span<uint>();
        var d = r.Span<uint>();
        var rank = shape.Length;
        if (rank == 0) { d[0] = s[(int)offset]; return r; }
        var idx = new int[rank];
        var cur = offset;
        var inner = shape[rank - 1];
        var istr = strides[rank - 1];
        var p = 0;
        while (true)
        {
            if (istr == 1) { s.Slice((int)cur, inner).CopyTo(d.Slice(p, inner)); p += inner; }
            else { var c = cur; for (var k = 0; k < inner; k++, c += istr) d[p++] = s[(int)c]; }
            var j = rank - 2;
            for (; j >= 0; j--)
            {
                idx[j]++;
                cur += strides[j];
                if (idx[j] < shape[j]) break;
                cur -= strides[j] * shape[j];
                idx[j] = 0;
            }
            if (j < 0) return r;
        }
    }

    public static Tensor Concat(IReadOnlyList<Tensor> xs, int axis)
    {
        var first = xs[0];
        var rank = first.Rank;
        if (axis < -rank || axis >= rank) throw new KernelException($"Concat axis {axis} is out of range for rank {rank}");
        if (axis < 0) axis += rank;
        var shape = (int[])first.Shape.Clone();
        shape[axis] = 0;
        foreach (var x in xs)
        {
            if (x.Rank != rank || x.Type != first.Type) throw new KernelException($"Concat inputs differ: {first} and {x}");
            for (var i = 0; i < rank; i++)
                if (i != axis && x.Shape[i] != first.Shape[i]) throw new KernelException($"Concat inputs differ outside axis {axis}: {first} and {x}");
            shape[axis] += x.Shape[axis];
        }
        var r = Tensor.Uninitialized(first.Type, shape);
        long outer = 1;
        for (var i = 0; i < axis; i++) outer *= shape[i];
        long innerPer = 1;
        for (var i = axis + 1; i < rank; i++) innerPer *= shape[i];
        var outRow = shape[axis] * innerPer;
        long at = 0;
        foreach (var x in xs)
        {
            var row = x.Shape[axis] * innerPer;
            for (long o = 0; o < outer; o++) CopyElements(x, o * row, r, o * outRow + at, row);
            at += row;
        }
        return r;
    }

    /// <summary>Copies <paramref name="count"/> elements between tensors of the same type.</summary>
    public static void CopyElements(Tensor src, long srcAt, Tensor dst, long dstAt, long count)
    {
        if (count == 0) return;
        if (src.Type == DType.String)
        {
            Array.Copy(src.Strings, srcAt, dst.Strings, dstAt, count);
            return;
        }
        var size = src.Type.Size();
        src.Bytes.Slice((int)(srcAt * size), (int)(count * size)).CopyTo(dst.Bytes.Slice((int)(dstAt * size)));
    }

    /// <summary>Slice with per-axis start, end and step already clamped (ONNX Slice semantics resolved by the caller).</summary>
    public static Tensor Slice(Tensor x, int[] starts, int[] ends, int[] steps)
    {
        var rank = x.Rank;
        var strides = Tensor.Strides(x.Shape);
        var shape = new int[rank];
        var outStrides = new long[rank];
        long offset = 0;
        for (var i = 0; i < rank; i++)
        {
            var step = steps[i];
            var n = step > 0 ? Math.Max(0, (ends[i] - starts[i] + step - 1) / step) : Math.Max(0, (starts[i] - ends[i] - step - 1) / -step);
            shape[i] = n;
            outStrides[i] = strides[i] * step;
            if (n > 0) offset += starts[i] * strides[i];
        }
        if (x.Type != DType.String && x.Type.Size() == 4) return StridedCopy32(x, shape, outStrides, offset);
        return Take(x, shape, StridedIndices(shape, outStrides, offset));
    }

    /// <summary>Resolves ONNX Slice starts/ends/axes/steps into per-axis clamped values.</summary>
    public static (int[] Starts, int[] Ends, int[] Steps) ResolveSlice(int[] shape, long[] starts, long[] ends, long[]? axes, long[]? steps)
    {
        var rank = shape.Length;
        var s = new int[rank];
        var e = (int[])shape.Clone();
        var st = Enumerable.Repeat(1, rank).ToArray();
        if (starts.Length != ends.Length) throw new KernelException($"Slice starts has {starts.Length} entries, ends {ends.Length}");
        var seen = new bool[rank];
        for (var k = 0; k < starts.Length; k++)
        {
            var a = axes is null ? k : (int)axes[k];
            if (a < -rank || a >= rank) throw new KernelException($"Slice axis {a} is out of range for rank {rank}");
            if (a < 0) a += rank;
            if (seen[a]) throw new KernelException($"Slice axis {a} appears twice");
            seen[a] = true;
            var step = steps is null ? 1 : steps[k];
            if (step == 0) throw new KernelException("Slice step cannot be 0");
            long dim = shape[a];
            long start = starts[k], end = ends[k];
            if (start < 0) start += dim;
            if (end < 0) end += dim;
            if (step > 0)
            {
                start = Math.Clamp(start, 0, dim);
                end = Math.Clamp(end, 0, dim);
            }
            else
            {
                start = Math.Clamp(start, 0, dim - 1);
                end = Math.Clamp(end, -1, dim - 1);
            }
            s[a] = (int)start;
            e[a] = (int)end;
            st[a] = (int)Math.Clamp(step, int.MinValue + 1, int.MaxValue);
        }
        return (s, e, st);
    }

    /// <summary>Broadcasts x to <paramref name="shape"/> (ONNX Expand: the result is the broadcast of both).</summary>
    public static Tensor Expand(Tensor x, int[] shape)
    {
        var outShape = Broadcast.Shape(x.Shape, shape);
        var strides = Broadcast.StridesFor(x.Shape, outShape);
        if (x.Type != DType.String && x.Type.Size() == 4) return StridedCopy32(x, outShape, strides, 0);
        return Take(x, outShape, StridedIndices(outShape, strides));
    }

    public static Tensor Tile(Tensor x, long[] repeats)
    {
        if (repeats.Length != x.Rank) throw new KernelException($"Tile repeats has {repeats.Length} entries for a rank-{x.Rank} tensor");
        var shape = x.Shape.Select((d, i) => checked((int)(d * repeats[i]))).ToArray();
        var strides = Tensor.Strides(x.Shape);
        return Take(x, shape, Indices(shape, idx =>
        {
            long o = 0;
            for (var i = 0; i < idx.Length; i++) o += idx[i] % x.Shape[i] * strides[i];
            return o;
        }));
    }

    /// <summary>Where(cond, x, y) with three-way broadcasting.</summary>
    public static Tensor Where(Tensor cond, Tensor x, Tensor y)
    {
        if (x.Type != y.Type) throw new KernelException($"Where branches differ in type: {x.Type.Name()} and {y.Type.Name()}");
        var shape = Broadcast.Shape(cond.Shape, x.Shape, y.Shape);
        var sc = Broadcast.StridesFor(cond.Shape, shape);
        var sx = Broadcast.StridesFor(x.Shape, shape);
        var sy = Broadcast.StridesFor(y.Shape, shape);
        var c = cond.Span<byte>().ToArray();
        var ix = StridedIndices(shape, sx);
        var iy = StridedIndices(shape, sy);
        var ic = StridedIndices(shape, sc);
        var idxX = new long[ix.Length];
        var idxY = new long[ix.Length];
        for (var i = 0; i < ix.Length; i++)
        {
            var take = c[ic[i]] != 0;
            idxX[i] = take ? ix[i] : -1;
            idxY[i] = take ? -1 : iy[i];
        }
        var r = Tensor.Zeros(x.Type, shape);
        Take(x, r, idxX);
        Take(y, r, idxY);
        return r;
    }

    /// <summary>Pad: pads holds begin values for each axis then end values (negative pads crop).</summary>
    public static Tensor Pad(Tensor x, long[] pads, string mode, Tensor? value)
    {
        var rank = x.Rank;
        if (pads.Length != 2 * rank) throw new KernelException($"Pad needs {2 * rank} pad values for a rank-{rank} tensor, got {pads.Length}");
        var shape = new int[rank];
        for (var i = 0; i < rank; i++)
        {
            shape[i] = checked((int)(x.Shape[i] + pads[i] + pads[i + rank]));
            if (shape[i] < 0) throw new KernelException($"Pad makes axis {i} negative ({shape[i]})");
        }
        var strides = Tensor.Strides(x.Shape);
        var idx = Indices(shape, o =>
        {
            long off = 0;
            for (var i = 0; i < rank; i++)
            {
                long p = o[i] - pads[i];
                var d = x.Shape[i];
                if (p < 0 || p >= d)
                {
                    switch (mode)
                    {
                        case "constant": return -1;
                        case "edge": p = Math.Clamp(p, 0, d - 1); break;
                        case "reflect":
                            if (d == 1) p = 0;
                            else
                            {
                                var period = 2 * (d - 1);
                                p = ((p % period) + period) % period;
                                if (p >= d) p = period - p;
                            }
                            break;
                        case "wrap": p = ((p % d) + d) % d; break;
                        default: throw new KernelException($"Pad mode '{mode}' is not one of constant, reflect, edge, wrap");
                    }
                }
                off += p * strides[i];
            }
            return off;
        });
        if (x.Length == 0 && mode != "constant") throw new KernelException($"Pad mode '{mode}' needs a non-empty input");
        var r = Tensor.Zeros(x.Type, shape);
        if (mode == "constant" && value is not null && value.Length > 0)
        {
            var fill = Take(value, [1], [0L]);
            var fillIdx = new long[idx.Length];
            for (var i = 0; i < idx.Length; i++) fillIdx[i] = idx[i] < 0 ? 0 : -1;
            Take(fill, r, fillIdx);
        }
        Take(x, r, idx);
        return r;
    }

    public static int NormalizeAxis(long axis, int rank, string op)
    {
        if (axis < -rank || axis >= Math.Max(rank, 1)) throw new KernelException($"{op} axis {axis} is out of range for rank {rank}");
        return (int)(axis < 0 ? axis + rank : axis);
    }

    public static Tensor Gather(Tensor x, Tensor indices, long axisAttr)
    {
        var axis = NormalizeAxis(axisAttr, x.Rank, "Gather");
        var ind = indices.ToLongs();
        var dim = x.Shape[axis];
        for (var i = 0; i < ind.Length; i++)
        {
            if (ind[i] < -dim || ind[i] >= dim) throw new KernelException($"Gather index {ind[i]} is out of range for axis {axis} of size {dim}");
            if (ind[i] < 0) ind[i] += dim;
        }
        var shape = x.Shape[..axis].Concat(indices.Shape).Concat(x.Shape[(axis + 1)..]).ToArray();
        long outer = 1;
        for (var i = 0; i < axis; i++) outer *= x.Shape[i];
        long inner = 1;
        for (var i = axis + 1; i < x.Rank; i++) inner *= x.Shape[i];
        var r = Tensor.Uninitialized(x.Type, shape);
        long at = 0;
        for (long o = 0; o < outer; o++)
            foreach (var k in ind)
            {
                CopyElements(x, (o * dim + k) * inner, r, at, inner);
                at += inner;
            }
        return r;
    }

    public static Tensor GatherElements(Tensor x, Tensor indices, long axisAttr) =>
        Take(x, indices.Shape, ElementOffsets(x, indices, axisAttr, "GatherElements"));

    /// <summary>For GatherElements/ScatterElements: the offset in x of each index element (its position, with the axis coordinate replaced by the index).</summary>
    private static long[] ElementOffsets(Tensor x, Tensor indices, long axisAttr, string op)
    {
        var axis = NormalizeAxis(axisAttr, x.Rank, op);
        var ind = indices.ToLongs();
        var strides = Tensor.Strides(x.Shape);
        var dim = x.Shape[axis];
        var p = 0;
        return Indices(indices.Shape, o =>
        {
            long off = 0;
            for (var i = 0; i < o.Length; i++)
            {
                long v = i == axis ? ind[p] : o[i];
                if (i == axis)
                {
                    if (v < -dim || v >= dim) throw new KernelException($"{op} index {v} is out of range for axis {axis} of size {dim}");
                    if (v < 0) v += dim;
                }
                off += v * strides[i];
            }
            p++;
            return off;
        });
    }

    public static Tensor ScatterElements(Tensor x, Tensor indices, Tensor updates, long axisAttr, string reduction) =>
        ScatterInto(x, updates, ElementOffsets(x, indices, axisAttr, "ScatterElements"), 1, reduction);

    /// <summary>Copies x, then for each k writes (or reduces) updates' block k of <paramref name="block"/> elements at offset target[k].</summary>
    private static Tensor ScatterInto(Tensor x, Tensor updates, long[] target, long block, string reduction)
    {
        var r = Tensor.Uninitialized(x.Type, x.Shape);
        CopyElements(x, 0, r, 0, x.Length);
        if (reduction == "none")
        {
            for (var k = 0; k < target.Length; k++) CopyElements(updates, k * block, r, target[k] * block, block);
            return r;
        }
        if (x.Type == DType.String) throw new KernelException($"reduction '{reduction}' is not defined for strings");
        var rd = r.ToDoubles();
        for (var k = 0; k < target.Length; k++)
            for (long j = 0; j < block; j++)
            {
                var at = target[k] * block + j;
                var u = updates.GetDouble(k * block + j);
                rd[at] = reduction switch
                {
                    "add" => rd[at] + u,
                    "mul" => rd[at] * u,
                    "max" => Math.Max(rd[at], u),
                    "min" => Math.Min(rd[at], u),
                    _ => throw new KernelException($"reduction '{reduction}' is not one of none, add, mul, max, min"),
                };
            }
        return FromDoubles(x.Type, x.Shape, rd);
    }

    public static Tensor FromDoubles(DType type, int[] shape, double[] values)
    {
        var f = Tensor.FromArray(DType.F64, shape, values);
        return type.IsFloat() ? Cast.To(f, type) : Cast.To(Cast.To(f, DType.I64), type);
    }

    public static Tensor GatherND(Tensor x, Tensor indices, int batchDims)
    {
        var q = indices.Rank;
        var k = indices.Shape[q - 1];
        if (batchDims + k > x.Rank) throw new KernelException($"GatherND index depth {k} with {batchDims} batch dims exceeds rank {x.Rank}");
        var ind = indices.ToLongs();
        var strides = Tensor.Strides(x.Shape);
        long block = 1;
        for (var i = batchDims + k; i < x.Rank; i++) block *= x.Shape[i];
        long batch = 1;
        for (var i = 0; i < batchDims; i++) batch *= x.Shape[i];
        var shape = indices.Shape[..(q - 1)].Concat(x.Shape[(batchDims + k)..]).ToArray();
        var count = ind.Length / Math.Max(k, 1);
        if (k == 0) count = (int)Tensor.Count(indices.Shape[..(q - 1)]);
        var perBatch = count / Math.Max(batch, 1);
        var r = Tensor.Uninitialized(x.Type, shape);
        var batchStride = batchDims == 0 ? 0 : strides[batchDims - 1];
        for (long t = 0; t < count; t++)
        {
            var b = perBatch == 0 ? 0 : t / perBatch;
            long off = b * batchStride;
            for (var j = 0; j < k; j++)
            {
                var d = x.Shape[batchDims + j];
                var v = ind[t * k + j];
                if (v < -d || v >= d) throw new KernelException($"GatherND index {v} is out of range for axis {batchDims + j} of size {d}");
                if (v < 0) v += d;
                off += v * strides[batchDims + j];
            }
            CopyElements(x, off, r, t * block, block);
        }
        return r;
    }

    public static Tensor ScatterND(Tensor x, Tensor indices, Tensor updates, string reduction)
    {
        var q = indices.Rank;
        var k = indices.Shape[q - 1];
        var ind = indices.ToLongs();
        var strides = Tensor.Strides(x.Shape);
        long block = 1;
        for (var i = k; i < x.Rank; i++) block *= x.Shape[i];
        var count = k == 0 ? 1 : ind.Length / k;
        var target = new long[count];
        for (var t = 0; t < count; t++)
        {
            long off = 0;
            for (var j = 0; j < k; j++)
            {
                var d = x.Shape[j];
                var v = ind[t * k + j];
                if (v < -d || v >= d) throw new KernelException($"ScatterND index {v} is out of range for axis {j} of size {d}");
                if (v < 0) v += d;
                off += v * strides[j];
            }
            if (off % block != 0) throw new KernelException("ScatterND target is not block aligned");
            target[t] = off / block;
        }
        return ScatterInto(x, updates, target, block, reduction);
    }
}
