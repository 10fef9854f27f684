using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

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
            strides[d] = n == 1 ? 0 : acc;
            acc *= n;
        }
        return to.Length;
    }

    /// <summary>y = a &gt; b (bool as bytes) with broadcasting.</summary>
    public static void Greater<T>(ReadOnlySpan<T> a, ReadOnlySpan<int> aShape, ReadOnlySpan<T> b, ReadOnlySpan<int> bShape, Span<byte> y, ReadOnlySpan<int> yShape)
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
            y[i] = a[(int)ia] > b[(int)ib] ? (byte)1 : (byte)0;
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

    /// <summary>y = x with its axes permuted (y's axis i is x's axis perm[i]).</summary>
    public static void Transpose<T>(ReadOnlySpan<T> x, ReadOnlySpan<int> shape, ReadOnlySpan<int> perm, Span<T> y) where T : unmanaged
    {
        var rank = shape.Length;
        if (rank > MaxRank) throw new KernelException($"planned kernels take rank ≤ {MaxRank}, got {rank}");
        Span<long> xs = stackalloc long[MaxRank];
        long acc = 1;
        for (var d = rank - 1; d >= 0; d--) { xs[d] = acc; acc *= shape[d]; }
        Span<long> src = stackalloc long[MaxRank];
        Span<int> ys = stackalloc int[MaxRank];
        for (var d = 0; d < rank; d++) { src[d] = xs[perm[d]]; ys[d] = shape[perm[d]]; }
        if (rank == 0) { x.CopyTo(y); return; }
        var inner = ys[rank - 1];
        var innerStride = src[rank - 1];
        Span<int> index = stackalloc int[MaxRank];
        index.Clear();
        long ix = 0;
        for (var o = 0; o < y.Length; o += inner)
        {
            if (innerStride == 1) x.Slice((int)ix, inner).CopyTo(y.Slice(o, inner));
            else for (var j = 0; j < inner; j++) y[o + j] = x[(int)(ix + j * innerStride)];
            for (var d = rank - 2; d >= 0; d--)
            {
                ix += src[d];
                if (++index[d] < ys[d]) break;
                ix -= src[d] * ys[d];
                index[d] = 0;
            }
        }
    }

    /// <summary>Copies one Concat input into its place: <paramref name="outer"/> blocks of <paramref name="part"/> elements, at <paramref name="offset"/> within each output block of <paramref name="block"/>.</summary>
    public static void ConcatPart<T>(ReadOnlySpan<T> x, int outer, int part, Span<T> y, int block, int offset) where T : unmanaged
    {
        for (var o = 0; o < outer; o++) x.Slice(o * part, part).CopyTo(y.Slice(o * block + offset, part));
    }

    /// <summary>Rotary embedding over rows of d (row r at position r mod s) with cos/sin [s, d/2].</summary>
    /// <remarks>
    /// Rows of x are d long; row r rotates by position (r / <paramref name="inner"/>) mod <paramref name="s"/>: the
    /// positions run along one axis of x, with <paramref name="inner"/> rows per position after it ([b, h, s, d]
    /// with cos [s, d/2]: inner 1; [b, s, h, d] with cos [1, s, 1, d/2]: inner h).
    /// </remarks>
    public static void Rotary(ReadOnlySpan<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, Span<float> y, int inner, int s, int d, bool interleaved)
    {
        var half = d / 2;
        for (int row = 0, rows = x.Length / d; row < rows; row++)
        {
            var p = row / inner % s * half;
            var xr = x.Slice(row * d, d);
            var yr = y.Slice(row * d, d);
            var c = cos.Slice(p, half);
            var sn = sin.Slice(p, half);
            for (var i = 0; i < half; i++)
            {
                int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                float x0 = xr[a], x1 = xr[b];
                yr[a] = x0 * c[i] - x1 * sn[i];
                yr[b] = x0 * sn[i] + x1 * c[i];
            }
        }
    }

    /// <summary>Writes new keys or values [b, kvh, seq, d] into a cache laid out [b, kvh, capacity, d] after its first <paramref name="past"/> positions.</summary>
    public static void KvAppend(ReadOnlySpan<float> x, Span<float> cache, int heads, int seq, int d, int past, int capacity)
    {
        if (past + seq > capacity) throw new KernelException($"the KV cache holds {capacity} positions; {past} + {seq} do not fit");
        for (var h = 0; h < heads; h++)
            x.Slice(h * seq * d, seq * d).CopyTo(cache.Slice((h * capacity + past) * d, seq * d));
    }

    /// <summary>A·B + C (C the product's shape, or one row broadcast to every row), then the activation.</summary>
    public static void MatMulAdd(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Tensor weights, ReadOnlySpan<float> c, Span<float> y, int m, int n, int k, string activation)
    {
        if (c.Length == y.Length) c.CopyTo(y);
        else for (var i = 0; i < m; i++) c.CopyTo(y.Slice(i * n, n));
        MatMul.Gemm(a, k, false, b, n, false, y, n, m, n, k, accumulate: true, weights, 0);
        Fused.Activate(y, activation);
    }

    /// <summary>x·Wᵀ for a quantized W (+ C: the product's shape, or one row broadcast to every row), then the activation.</summary>
    public static void QuantizedMatMul(ReadOnlySpan<float> x, Weights.QuantizedLayout layout, ReadOnlySpan<byte> codes, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros,
        ReadOnlySpan<float> c, Span<float> y, string activation, int activationBits = 0, ReadOnlySpan<float> activationScales = default)
    {
        var m = x.Length / layout.Columns;
        if (!c.IsEmpty)
        {
            if (c.Length == y.Length) c.CopyTo(y);
            else for (var i = 0; i < m; i++) c.CopyTo(y.Slice(i * layout.Rows, layout.Rows));
        }
        Kernels.QuantizedMatMul.Multiply(x, m, layout, codes, scales, zeros, y, accumulate: !c.IsEmpty, activationBits, activationScales);
        Fused.Activate(y, activation);
    }

    /// <summary>
    /// softmax(Q·Kᵀ·scale + mask)·V over Q [b, h, s, d]; K and V hold (b, kvh) heads of <paramref name="t"/> rows
    /// <paramref name="kvStride"/> elements apart (a dense tensor: t·d; a KV cache: capacity·d); query head j reads
    /// key/value head j / (h / kvh). The mask is read at b·m0 + h·m1 + i·m2 + j·m3 (0 strides broadcast); empty: none.
    /// </summary>
    public static void Attention(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> mask,
        long m0, long m1, long m2, long m3, Span<float> o, int b, int h, int s, int d, int kvh, int t, int kvStride, float scale)
    {
        if (kvh == 0 || h % kvh != 0) throw new KernelException($"attention with {h} query heads cannot share {kvh} key/value heads");
        fixed (float* pq = q)
        fixed (float* pk = k)
        fixed (float* pv = v)
        fixed (float* pm = mask)
        fixed (float* po = o)
        {
            var job = new AttentionJob
            {
                Q = pq, K = pk, V = pv, Mask = mask.IsEmpty ? null : pm, O = po, M0 = m0, M1 = m1, M2 = m2, M3 = m3,
                H = h, S = s, D = d, Kvh = kvh, T = t, KvStride = kvStride, Scale = scale,
            };
            RunHeads(&job, b);
        }
    }

    /// <summary>Every (batch row, query head) of the job, on the team once the work is worth a second core.</summary>
    private static void RunHeads(AttentionJob* job, int b)
    {
        var heads = b * job->H;
        // From ~16K multiply-adds per call (a decoding step of 12 heads of 64 over 21 positions) a second core pays
        // for waking it.
        var threads = heads > 1 && (long)heads * job->S * job->T * job->D >= 1L << 14 ? Parallelism.Threads : 1;
        WorkerTeam.For(heads, threads, &AttentionHead, job);
    }

    private struct AttentionJob
    {
        public float* Q, K, V, Mask, O;
        // An int8 cache instead of K and V: codes [kv heads, capacity, d] and a scale per position (KvStride = capacity·d).
        public sbyte* KCodes, VCodes;
        public float* KScales, VScales;
        public long M0, M1, M2, M3;
        public int H, S, D, Kvh, T, KvStride;
        public float Scale;
    }

    private static void AttentionHead(void* state, int bh)
    {
        ref var j = ref *(AttentionJob*)state;
        int h = j.H, s = j.S, d = j.D, t = j.T, group = h / j.Kvh;
        int bi = bh / h, hi = bh % h, kv = bi * j.Kvh + hi / group;
        var int8 = j.KCodes != null;
        if (s >= 4 && !int8 && d % 16 == 0 && Avx512F.IsSupported)
        {
            AttentionHeadBlocked(ref j, j.Q + (long)bh * s * d, j.K + (long)kv * j.KvStride, j.V + (long)kv * j.KvStride, j.O + (long)bh * s * d, bi, hi);
            return;
        }
        var Q = new ReadOnlySpan<float>(j.Q + (long)bh * s * d, s * d);
        var K = int8 ? default : new ReadOnlySpan<float>(j.K + (long)kv * j.KvStride, t * d);
        var V = int8 ? default : new ReadOnlySpan<float>(j.V + (long)kv * j.KvStride, t * d);
        sbyte* kc = int8 ? j.KCodes + (long)kv * j.KvStride : null, vc = int8 ? j.VCodes + (long)kv * j.KvStride : null;
        float* ks = int8 ? j.KScales + (long)kv * (j.KvStride / d) : null, vs = int8 ? j.VScales + (long)kv * (j.KvStride / d) : null;
        var O = new Span<float>(j.O + (long)bh * s * d, s * d);
        // Narrow heads or many queries: K and V transposed to [d, t], so scores and outputs run as d vector
        // operations of length t (d = 8 makes t dot products of length 8 mostly overhead). One query over wide
        // heads (decoding): t dot products of length d straight from the cache, no copy.
        var transpose = s >= 4;
        // Scores live on the stack up to 64 KB (decoding: the cache grows every token, and pooled arrays would be
        // rented in a new size class each time it doubles); the transposed K and V of prefill come from the pool.
        float[]? rented = transpose || t > 16384 ? System.Buffers.ArrayPool<float>.Shared.Rent(t + (transpose ? 2 * t * d : 0)) : null;
        Span<float> stack = rented is null ? stackalloc float[t] : default;
        try
        {
            var scores = rented is null ? stack : rented.AsSpan(0, t);
            var kt = transpose ? rented.AsSpan(t, t * d) : default;
            var vt = transpose ? rented.AsSpan(t + t * d, t * d) : default;
            if (transpose && int8)
                for (var c = 0; c < d; c++)
                    for (var p = 0; p < t; p++)
                    {
                        kt[c * t + p] = kc[(long)p * d + c] * ks[p];
                        vt[c * t + p] = vc[(long)p * d + c] * vs[p];
                    }
            else if (transpose)
                for (var c = 0; c < d; c++)
                    for (var p = 0; p < t; p++)
                    {
                        kt[c * t + p] = K[p * d + c];
                        vt[c * t + p] = V[p * d + c];
                    }
            for (var i = 0; i < s; i++)
            {
                var qi = Q.Slice(i * d, d);
                if (transpose)
                {
                    scores.Clear();
                    for (var c = 0; c < d; c++) TensorPrimitives.MultiplyAdd(kt.Slice(c * t, t), qi[c] * j.Scale, scores, scores);
                }
                else if (int8)
                    for (var p = 0; p < t; p++) scores[p] = SmallDotInt8(qi, kc + (long)p * d) * (ks[p] * j.Scale);
                else
                    for (var p = 0; p < t; p++) scores[p] = SmallDot(qi, K.Slice(p * d, d)) * j.Scale;
                if (j.Mask != null)
                {
                    var baseIndex = bi * j.M0 + hi * j.M1 + i * j.M2;
                    if (j.M3 == 1) TensorPrimitives.Add(scores, new ReadOnlySpan<float>(j.Mask + baseIndex, t), scores);
                    else for (var p = 0; p < t; p++) scores[p] += j.Mask[baseIndex + p * j.M3];
                }
                var max = TensorPrimitives.Max(scores);
                var oi = O.Slice(i * d, d);
                if (float.IsNegativeInfinity(max)) { oi.Fill(float.NaN); continue; } // every position masked: softmax is 0/0
                TensorPrimitives.Subtract(scores, max, scores);
                TensorPrimitives.Exp(scores, scores);
                var inv = 1f / TensorPrimitives.Sum(scores);
                if (transpose)
                    for (var c = 0; c < d; c++) oi[c] = TensorPrimitives.Dot(scores, vt.Slice(c * t, t)) * inv;
                else if (int8)
                {
                    oi.Clear();
                    for (var p = 0; p < t; p++) SmallAxpyInt8(vc + (long)p * d, scores[p] * inv * vs[p], oi);
                }
                else
                {
                    oi.Clear();
                    for (var p = 0; p < t; p++) SmallAxpy(V.Slice(p * d, d), scores[p] * inv, oi);
                }
            }
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// One head of prefill, four queries at a time: scores as a register-blocked product against Kᵀ (each K element
    /// loaded once per four queries), softmax per row, then the outputs as a blocked product with V read row by row
    /// in place. A library call per (query, channel) of length t would cost more than its arithmetic at head sizes.
    /// </summary>
    private static void AttentionHeadBlocked(ref AttentionJob j, float* q, float* k, float* v, float* o, int bi, int hi)
    {
        int s = j.S, d = j.D, t = j.T;
        // Kᵀ [d, t] (rows padded to 16) and 4 rows of scores.
        var tp = (t + 15) & ~15;
        var rented = System.Buffers.ArrayPool<float>.Shared.Rent(d * tp + 4 * tp);
        try
        {
            fixed (float* buffer = rented)
            {
                var kt = buffer;
                var scores = buffer + d * tp;
                var inv = stackalloc float[4];
                for (var p = 0; p < t; p++)
                    for (var c = 0; c < d; c++) kt[c * tp + p] = k[(long)p * d + c];
                for (var c = 0; c < d; c++)
                    for (var p = t; p < tp; p++) kt[c * tp + p] = 0;
                for (var i0 = 0; i0 < s; i0 += 4)
                {
                    var rows = Math.Min(4, s - i0);
                    Scores4(q + (long)i0 * d, rows, d, kt, tp, j.Scale, scores);
                    for (var r = 0; r < 4; r++)
                    {
                        var row = new Span<float>(scores + r * tp, t);
                        inv[r] = 0;
                        if (r >= rows) { row.Clear(); continue; }
                        if (j.Mask != null)
                        {
                            var baseIndex = bi * j.M0 + hi * j.M1 + (i0 + r) * j.M2;
                            if (j.M3 == 1) TensorPrimitives.Add(row, new ReadOnlySpan<float>(j.Mask + baseIndex, t), row);
                            else for (var p = 0; p < t; p++) row[p] += j.Mask[baseIndex + p * j.M3];
                        }
                        var max = TensorPrimitives.Max(row);
                        if (float.IsNegativeInfinity(max)) { inv[r] = float.NaN; row.Clear(); continue; } // every position masked: softmax is 0/0
                        TensorPrimitives.Subtract(row, max, row);
                        TensorPrimitives.Exp(row, row);
                        inv[r] = 1f / TensorPrimitives.Sum(row);
                    }
                    Outputs4(scores, tp, t, v, d, o + (long)i0 * d, rows, inv);
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>scores[r·tp + p] = scale · q_r·k_p for 4 query rows (rows past <paramref name="rows"/> read row 0) and every padded position.</summary>
    private static void Scores4(float* q, int rows, int d, float* kt, int tp, float scale, float* scores)
    {
        var q0 = q; var q1 = rows > 1 ? q + d : q; var q2 = rows > 2 ? q + 2 * d : q; var q3 = rows > 3 ? q + 3 * d : q;
        var sv = Vector512.Create(scale);
        var p = 0;
        for (; p + 32 <= tp; p += 32)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            for (var c = 0; c < d; c++)
            {
                var k0 = Vector512.Load(kt + c * tp + p);
                var k1 = Vector512.Load(kt + c * tp + p + 16);
                var x = Vector512.Create(q0[c]); a0 = Avx512F.FusedMultiplyAdd(x, k0, a0); b0 = Avx512F.FusedMultiplyAdd(x, k1, b0);
                x = Vector512.Create(q1[c]); a1 = Avx512F.FusedMultiplyAdd(x, k0, a1); b1 = Avx512F.FusedMultiplyAdd(x, k1, b1);
                x = Vector512.Create(q2[c]); a2 = Avx512F.FusedMultiplyAdd(x, k0, a2); b2 = Avx512F.FusedMultiplyAdd(x, k1, b2);
                x = Vector512.Create(q3[c]); a3 = Avx512F.FusedMultiplyAdd(x, k0, a3); b3 = Avx512F.FusedMultiplyAdd(x, k1, b3);
            }
            (a0 * sv).Store(scores + p); (b0 * sv).Store(scores + p + 16);
            (a1 * sv).Store(scores + tp + p); (b1 * sv).Store(scores + tp + p + 16);
            (a2 * sv).Store(scores + 2 * tp + p); (b2 * sv).Store(scores + 2 * tp + p + 16);
            (a3 * sv).Store(scores + 3 * tp + p); (b3 * sv).Store(scores + 3 * tp + p + 16);
        }
        if (p < tp)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (var c = 0; c < d; c++)
            {
                var k0 = Vector512.Load(kt + c * tp + p);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Create(q0[c]), k0, a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Create(q1[c]), k0, a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Create(q2[c]), k0, a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Create(q3[c]), k0, a3);
            }
            (a0 * sv).Store(scores + p); (a1 * sv).Store(scores + tp + p);
            (a2 * sv).Store(scores + 2 * tp + p); (a3 * sv).Store(scores + 3 * tp + p);
        }
    }

    /// <summary>o_r = inv_r · Σ_p e[r·tp + p]·v_p for the first <paramref name="rows"/> of 4 query rows, 32 (then 16) channels at a time.</summary>
    private static void Outputs4(float* e, int tp, int t, float* v, int d, float* o, int rows, float* inv)
    {
        var e0 = e; var e1 = e + tp; var e2 = e + 2 * tp; var e3 = e + 3 * tp;
        var c0 = 0;
        for (; c0 + 32 <= d; c0 += 32)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            for (var p = 0; p < t; p++)
            {
                var v0 = Vector512.Load(v + (long)p * d + c0);
                var v1 = Vector512.Load(v + (long)p * d + c0 + 16);
                var x = Vector512.Create(e0[p]); a0 = Avx512F.FusedMultiplyAdd(x, v0, a0); b0 = Avx512F.FusedMultiplyAdd(x, v1, b0);
                x = Vector512.Create(e1[p]); a1 = Avx512F.FusedMultiplyAdd(x, v0, a1); b1 = Avx512F.FusedMultiplyAdd(x, v1, b1);
                x = Vector512.Create(e2[p]); a2 = Avx512F.FusedMultiplyAdd(x, v0, a2); b2 = Avx512F.FusedMultiplyAdd(x, v1, b2);
                x = Vector512.Create(e3[p]); a3 = Avx512F.FusedMultiplyAdd(x, v0, a3); b3 = Avx512F.FusedMultiplyAdd(x, v1, b3);
            }
            StoreRow(o, d, c0, 0, rows, inv, a0, b0);
            StoreRow(o, d, c0, 1, rows, inv, a1, b1);
            StoreRow(o, d, c0, 2, rows, inv, a2, b2);
            StoreRow(o, d, c0, 3, rows, inv, a3, b3);
        }
        if (c0 < d)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (var p = 0; p < t; p++)
            {
                var v0 = Vector512.Load(v + (long)p * d + c0);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Create(e0[p]), v0, a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Create(e1[p]), v0, a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Create(e2[p]), v0, a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Create(e3[p]), v0, a3);
            }
            StoreRow(o, d, c0, 0, rows, inv, a0, default, two: false);
            StoreRow(o, d, c0, 1, rows, inv, a1, default, two: false);
            StoreRow(o, d, c0, 2, rows, inv, a2, default, two: false);
            StoreRow(o, d, c0, 3, rows, inv, a3, default, two: false);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(float* o, int d, int c0, int r, int rows, float* inv, Vector512<float> a, Vector512<float> b, bool two = true)
    {
        if (r >= rows) return;
        var dst = o + (long)r * d + c0;
        var scale = Vector512.Create(inv[r]);
        (a * scale).Store(dst);
        if (two) (b * scale).Store(dst + 16);
    }

    // Head-sized vectors (d = 8 … 128): inline 256-bit loops beat a library call per row at these lengths.
    private static float SmallDot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (!System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated || a.Length % 8 != 0) return TensorPrimitives.Dot(a, b);
        var acc = System.Runtime.Intrinsics.Vector256<float>.Zero;
        for (var i = 0; i < a.Length; i += 8)
            acc = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(System.Runtime.Intrinsics.Vector256.Create(a.Slice(i, 8)), System.Runtime.Intrinsics.Vector256.Create(b.Slice(i, 8)), acc);
        return System.Runtime.Intrinsics.Vector256.Sum(acc);
    }

    private static void SmallAxpy(ReadOnlySpan<float> x, float alpha, Span<float> y)
    {
        if (!System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated || x.Length % 8 != 0) { TensorPrimitives.MultiplyAdd(x, alpha, y, y); return; }
        var a = System.Runtime.Intrinsics.Vector256.Create(alpha);
        for (var i = 0; i < x.Length; i += 8)
            System.Runtime.Intrinsics.Vector256.CopyTo(System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(
                System.Runtime.Intrinsics.Vector256.Create(x.Slice(i, 8)), a, System.Runtime.Intrinsics.Vector256.Create((ReadOnlySpan<float>)y.Slice(i, 8))), y.Slice(i, 8));
    }
}
