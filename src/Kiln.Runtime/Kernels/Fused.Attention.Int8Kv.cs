using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// The int8 KV cache (<c>quantize-kv{bits=8}</c>): each key or value row of one head at one position is stored as
/// int8 codes with one f32 scale, max|x|/127 (symmetric, rounded to nearest, ties to even). A cached head row costs
/// d + 4 bytes instead of 4d. The evaluator rounds K and V to the same values (code·scale) before its f32 attention,
/// so `kiln eval` measures what the compiled decoder computes.
/// </summary>
public static unsafe partial class ArenaKernels
{
    /// <summary>Rounds one row to int8 codes and returns its scale (0 for a row of zeros).</summary>
    public static float QuantizeKvRow(ReadOnlySpan<float> x, Span<sbyte> codes)
    {
        var max = x.IsEmpty ? 0f : MathF.Abs(TensorPrimitives.MaxMagnitude(x));
        var inv = max > 0 ? 127f / max : 0f;
        for (var i = 0; i < x.Length; i++) codes[i] = (sbyte)MathF.Round(x[i] * inv);
        return max / 127f;
    }

    /// <summary>Rounds <paramref name="x"/> in place, <paramref name="d"/> elements per row, to what an int8 cache returns: code·scale.</summary>
    public static void RoundKvRows(Span<float> x, int d)
    {
        if (d <= 0) return;
        Span<sbyte> codes = d <= 4096 ? stackalloc sbyte[d] : new sbyte[d];
        for (var r = 0; r + d <= x.Length; r += d)
        {
            var row = x.Slice(r, d);
            var scale = QuantizeKvRow(row, codes);
            for (var i = 0; i < d; i++) row[i] = codes[i] * scale;
        }
    }

    /// <summary>Appends [heads, seq, d] keys or values at position <paramref name="past"/> of an int8 cache layer.</summary>
    public static void KvAppendInt8(ReadOnlySpan<float> x, Span<sbyte> codes, Span<float> scales, int heads, int seq, int d, int past, int capacity)
    {
        if (past + seq > capacity) throw new KernelException($"the KV cache holds {capacity} positions; {past} + {seq} do not fit");
        for (var h = 0; h < heads; h++)
            for (var p = 0; p < seq; p++)
            {
                var at = h * capacity + past + p;
                scales[at] = QuantizeKvRow(x.Slice((h * seq + p) * d, d), codes.Slice(at * d, d));
            }
    }

    /// <summary>
    /// <see cref="Attention"/> reading an int8 cache: keys and values of kv head j are codes
    /// [j·capacity·d …] with scales [j·capacity …]; the first <paramref name="t"/> positions are read.
    /// </summary>
    public static void AttentionInt8(ReadOnlySpan<float> q, ReadOnlySpan<sbyte> keyCodes, ReadOnlySpan<float> keyScales,
        ReadOnlySpan<sbyte> valueCodes, ReadOnlySpan<float> valueScales, ReadOnlySpan<float> mask, long m0, long m1, long m2, long m3,
        Span<float> o, int b, int h, int s, int d, int kvh, int t, int capacity, float scale)
    {
        if (kvh == 0 || h % kvh != 0) throw new KernelException($"attention with {h} query heads cannot share {kvh} key/value heads");
        if (t > capacity || (long)b * kvh * capacity * d > keyCodes.Length || (long)b * kvh * capacity > keyScales.Length)
            throw new KernelException($"attention over {t} cached positions does not fit a cache of {capacity}");
        fixed (float* pq = q)
        fixed (sbyte* pk = keyCodes)
        fixed (sbyte* pv = valueCodes)
        fixed (float* pks = keyScales)
        fixed (float* pvs = valueScales)
        fixed (float* pm = mask)
        fixed (float* po = o)
        {
            var job = new AttentionJob
            {
                Q = pq, KCodes = pk, VCodes = pv, KScales = pks, VScales = pvs, Mask = mask.IsEmpty ? null : pm, O = po,
                M0 = m0, M1 = m1, M2 = m2, M3 = m3, H = h, S = s, D = d, Kvh = kvh, T = t, KvStride = capacity * d, Scale = scale,
            };
            RunHeads(&job, b);
        }
    }

    /// <summary>
    /// <see cref="Attention"/> with K and V rounded as an int8 cache would hold them, for attention with kv_bits=8 whose
    /// keys are not in one (a whole-sequence run): the rounded copies come from the array pool.
    /// </summary>
    public static void AttentionRoundedKv(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> mask,
        long m0, long m1, long m2, long m3, Span<float> o, int b, int h, int s, int d, int kvh, int t, int kvStride, float scale)
    {
        var rows = b * kvh;
        var keys = System.Buffers.ArrayPool<float>.Shared.Rent(rows * t * d);
        var values = System.Buffers.ArrayPool<float>.Shared.Rent(rows * t * d);
        try
        {
            for (var r = 0; r < rows; r++)
            {
                k.Slice(r * kvStride, t * d).CopyTo(keys.AsSpan(r * t * d, t * d));
                v.Slice(r * kvStride, t * d).CopyTo(values.AsSpan(r * t * d, t * d));
            }
            RoundKvRows(keys.AsSpan(0, rows * t * d), d);
            RoundKvRows(values.AsSpan(0, rows * t * d), d);
            Attention(q, keys.AsSpan(0, rows * t * d), values.AsSpan(0, rows * t * d), mask, m0, m1, m2, m3, o, b, h, s, d, kvh, t, t * d, scale);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(keys);
            System.Buffers.ArrayPool<float>.Shared.Return(values);
        }
    }

    private static float SmallDotInt8(ReadOnlySpan<float> a, sbyte* codes)
    {
        var i = 0;
        var sum = 0f;
        if (Avx2.IsSupported && a.Length >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= a.Length; i += 8)
                acc = Vector256.FusedMultiplyAdd(Vector256.Create(a.Slice(i, 8)), Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes + i)), acc);
            sum = Vector256.Sum(acc);
        }
        for (; i < a.Length; i++) sum += a[i] * codes[i];
        return sum;
    }

    private static void SmallAxpyInt8(sbyte* codes, float alpha, Span<float> y)
    {
        var i = 0;
        if (Avx2.IsSupported)
        {
            var a = Vector256.Create(alpha);
            for (; i + 8 <= y.Length; i += 8)
                Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes + i)), a, Vector256.Create((ReadOnlySpan<float>)y.Slice(i, 8))).CopyTo(y.Slice(i, 8));
        }
        for (; i < y.Length; i++) y[i] += codes[i] * alpha;
    }
}
