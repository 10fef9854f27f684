using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Runtime.Kernels;

/// <summary>Span kernels of planned code (grouped-query attention over dense keys and values or the KV cache); see <see cref="ArenaKernels"/>.</summary>
public static unsafe partial class ArenaKernels
{
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
                    // A causal mask hides every position after the block's last query: those weights are exactly zero
                    // (exp of a score minus 1e30 or more underflows), so neither scores nor outputs visit them.
                    var live = j.Mask == null ? t : LivePositions(ref j, bi, hi, i0, rows);
                    Scores4(q + (long)i0 * d, rows, d, kt, tp, (live + 15) & ~15, j.Scale, scores);
                    for (var r = 0; r < 4; r++)
                    {
                        var row = new Span<float>(scores + r * tp, live);
                        inv[r] = 0;
                        if (r >= rows) { row.Clear(); continue; }
                        if (j.Mask != null)
                        {
                            var baseIndex = bi * j.M0 + hi * j.M1 + (i0 + r) * j.M2;
                            if (j.M3 == 1) TensorPrimitives.Add(row, new ReadOnlySpan<float>(j.Mask + baseIndex, live), row);
                            else for (var p = 0; p < live; p++) row[p] += j.Mask[baseIndex + p * j.M3];
                        }
                        var max = TensorPrimitives.Max(row);
                        if (float.IsNegativeInfinity(max)) { inv[r] = float.NaN; row.Clear(); continue; } // every position masked: softmax is 0/0
                        TensorPrimitives.Subtract(row, max, row);
                        TensorPrimitives.Exp(row, row);
                        inv[r] = 1f / TensorPrimitives.Sum(row);
                    }
                    Outputs4(scores, tp, live, v, d, o + (long)i0 * d, rows, inv);
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    // A mask value at or below this hides its position: added to any finite score it leaves a weight exp(x − max) of 0.
    private const float Hidden = -1e30f;

    /// <summary>
    /// How many leading positions the block of query rows [i0, i0 + rows) reads: up to the last one some row leaves
    /// unhidden. All t when a row would see none of them (its softmax then spreads over every position, as it must).
    /// </summary>
    private static int LivePositions(ref AttentionJob j, int bi, int hi, int i0, int rows)
    {
        int t = j.T, live = 0;
        for (var r = 0; r < rows; r++)
        {
            var at = j.Mask + bi * j.M0 + hi * j.M1 + (i0 + r) * j.M2;
            var last = t - 1;
            while (last >= 0 && at[last * j.M3] <= Hidden) last--;
            if (last < 0) return t;
            live = Math.Max(live, last + 1);
        }
        return live;
    }

    /// <summary>
    /// scores[r·tp + p] = scale · q_r·k_p for 4 query rows (rows past <paramref name="rows"/> read row 0) and the first
    /// <paramref name="length"/> positions (a multiple of 16, at most the padded row length <paramref name="tp"/>).
    /// </summary>
    private static void Scores4(float* q, int rows, int d, float* kt, int tp, int length, float scale, float* scores)
    {
        var q0 = q; var q1 = rows > 1 ? q + d : q; var q2 = rows > 2 ? q + 2 * d : q; var q3 = rows > 3 ? q + 3 * d : q;
        var sv = Vector512.Create(scale);
        var p = 0;
        for (; p + 32 <= length; p += 32)
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
        if (p < length)
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
