using Kiln.Runtime;
using Kiln.Runtime.Decoding;
using Kiln.Runtime.Kernels;

namespace Kiln.Evaluator.Tests;

/// <summary>The int8 KV cache: row rounding, the cache's storage and the attention that reads it, against f32 attention over rounded keys and values.</summary>
public sealed class Int8KvCacheTests
{
    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
    }

    [Fact]
    public void A_row_rounds_to_within_half_a_step_and_rounding_twice_changes_nothing()
    {
        var x = Random(64, 1);
        x[5] = 0;
        var codes = new sbyte[64];
        var scale = ArenaKernels.QuantizeKvRow(x, codes);
        Assert.Equal(x.Max(MathF.Abs) / 127f, scale, 1e-7f);
        Assert.Contains(codes, c => Math.Abs(c) == 127);
        for (var i = 0; i < 64; i++) Assert.InRange(Math.Abs(codes[i] * scale - x[i]), 0, scale / 2 + 1e-6f);
        var rounded = (float[])x.Clone();
        ArenaKernels.RoundKvRows(rounded, 64);
        var again = (float[])rounded.Clone();
        ArenaKernels.RoundKvRows(again, 64);
        Assert.Equal(rounded, again);
        Assert.Equal(0f, ArenaKernels.QuantizeKvRow(new float[8], new sbyte[8]));
    }

    [Fact]
    public void The_cache_holds_codes_and_scales_in_a_quarter_of_the_bytes_and_refuses_the_other_format()
    {
        var f32 = new KvCache(2, 1, 4, 64, 128);
        var int8 = new KvCache(2, 1, 4, 64, 128, bits: 8);
        Assert.Equal(2L * 2 * 4 * 128 * 64 * 4, f32.Bytes);
        Assert.Equal(2L * 2 * 4 * 128 * (64 + 4), int8.Bytes);
        Assert.Equal(4 * 128 * 64, int8.KeyCodes(1).Length);
        Assert.Equal(4 * 128, int8.ValueScales(0).Length);
        Assert.Throws<KernelException>(() => int8.Keys(0).Length);
        Assert.Throws<KernelException>(() => f32.KeyCodes(0).Length);
        Assert.Throws<KernelException>(() => new KvCache(1, 1, 1, 8, 8, bits: 4));
    }

    [Theory]
    [InlineData(1, 9)]  // decoding: one query, dot products straight from the codes
    [InlineData(5, 12)] // prefill: keys and values dequantized into the transposed scratch
    public void Attention_over_the_int8_cache_equals_f32_attention_over_rounded_keys_and_values(int s, int past)
    {
        const int b = 1, h = 4, kvh = 2, d = 16, capacity = 32;
        var t = past + s;
        var q = Random(b * h * s * d, 2);
        var k = Random(b * kvh * t * d, 3);
        var v = Random(b * kvh * t * d, 4);
        var cache = new KvCache(1, b, kvh, d, capacity, bits: 8);
        // The past first, then this call's positions, as a decoder appends them.
        var pastK = new float[kvh * past * d];
        var pastV = new float[kvh * past * d];
        var newK = new float[kvh * s * d];
        var newV = new float[kvh * s * d];
        for (var j = 0; j < kvh; j++)
        {
            k.AsSpan(j * t * d, past * d).CopyTo(pastK.AsSpan(j * past * d));
            v.AsSpan(j * t * d, past * d).CopyTo(pastV.AsSpan(j * past * d));
            k.AsSpan(j * t * d + past * d, s * d).CopyTo(newK.AsSpan(j * s * d));
            v.AsSpan(j * t * d + past * d, s * d).CopyTo(newV.AsSpan(j * s * d));
        }
        ArenaKernels.KvAppendInt8(pastK, cache.KeyCodes(0), cache.KeyScales(0), kvh, past, d, 0, capacity);
        ArenaKernels.KvAppendInt8(pastV, cache.ValueCodes(0), cache.ValueScales(0), kvh, past, d, 0, capacity);
        ArenaKernels.KvAppendInt8(newK, cache.KeyCodes(0), cache.KeyScales(0), kvh, s, d, past, capacity);
        ArenaKernels.KvAppendInt8(newV, cache.ValueCodes(0), cache.ValueScales(0), kvh, s, d, past, capacity);
        var got = new float[b * h * s * d];
        ArenaKernels.AttentionInt8(q, cache.KeyCodes(0), cache.KeyScales(0), cache.ValueCodes(0), cache.ValueScales(0), default, 0, 0, 0, 0,
            got, b, h, s, d, kvh, t, capacity, 0.25f);
        var expected = Fused.GroupQueryAttention(Tensor.FromArray(DType.F32, [b, h, s, d], q), Tensor.FromArray(DType.F32, [b, kvh, t, d], k),
            Tensor.FromArray(DType.F32, [b, kvh, t, d], v), null, 0.25f, kvBits: 8).Span<float>().ToArray();
        var plain = Fused.GroupQueryAttention(Tensor.FromArray(DType.F32, [b, h, s, d], q), Tensor.FromArray(DType.F32, [b, kvh, t, d], k),
            Tensor.FromArray(DType.F32, [b, kvh, t, d], v), null, 0.25f).Span<float>().ToArray();
        for (var i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - expected[i]) <= 1e-5f, $"o[{i}] = {got[i]}, expected {expected[i]}");
        // Rounding is visible but small: the cache is not silently f32.
        Assert.Contains(Enumerable.Range(0, got.Length), i => got[i] != plain[i]);
        Assert.All(Enumerable.Range(0, got.Length), i => Assert.True(Math.Abs(got[i] - plain[i]) <= 0.05f));
        Assert.Throws<KernelException>(() => ArenaKernels.KvAppendInt8(newK, cache.KeyCodes(0), cache.KeyScales(0), kvh, s, d, capacity - s + 1, capacity));
    }
}
