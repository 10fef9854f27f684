using Kiln.Runtime;
using Kiln.Runtime.Kernels;

namespace Kiln.Evaluator.Tests;

/// <summary>Kiln's fused kernels against plain double-precision loops of what they replace.</summary>
public sealed class FusedKernelTests
{
    private static Tensor Random(int[] shape, int seed)
    {
        var rng = new Random(seed);
        var data = new float[Tensor.Count(shape)];
        for (var i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
        return Tensor.FromArray(DType.F32, shape, data);
    }

    private static void Close(ReadOnlySpan<float> got, double[] want, double tolerance = 1e-5)
    {
        Assert.Equal(want.Length, got.Length);
        for (var i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(got[i] - want[i]) <= tolerance * Math.Max(1, Math.Abs(want[i])), $"[{i}] got {got[i]}, expected {want[i]}");
    }

    [Theory]
    [InlineData(1, 4, 2, 1, 7, 32, true)]  // one query, wide heads: dot products straight from the cache
    [InlineData(2, 4, 2, 5, 9, 8, true)]   // several queries, narrow heads: transposed K/V
    [InlineData(1, 3, 3, 2, 4, 16, false)] // no grouping, no mask
    [InlineData(1, 4, 2, 6, 37, 48, true)] // prefill with AVX-512: queries by four (and a last two), positions by 32 then 16, channels by 32 then 16
    [InlineData(2, 2, 1, 8, 64, 64, false)] // prefill, whole blocks everywhere
    public void Grouped_query_attention_matches_softmax_of_scores(int b, int h, int kvh, int s, int t, int d, bool masked)
    {
        var q = Random([b, h, s, d], 1);
        var k = Random([b, kvh, t, d], 2);
        var v = Random([b, kvh, t, d], 3);
        var mask = masked ? Random([s, t], 4) : null;
        const float scale = 0.37f;
        var r = Fused.GroupQueryAttention(q, k, v, mask, scale);
        var want = new double[b * h * s * d];
        var Q = q.Span<float>(); var K = k.Span<float>(); var V = v.Span<float>();
        for (var bi = 0; bi < b; bi++)
            for (var hi = 0; hi < h; hi++)
                for (var i = 0; i < s; i++)
                {
                    var kv = hi / (h / kvh);
                    var sc = new double[t];
                    for (var j = 0; j < t; j++)
                    {
                        double dot = 0;
                        for (var c = 0; c < d; c++) dot += Q[((bi * h + hi) * s + i) * d + c] * K[((bi * kvh + kv) * t + j) * d + c];
                        sc[j] = dot * scale + (mask is null ? 0 : mask.Span<float>()[i * t + j]);
                    }
                    var max = sc.Max();
                    var e = sc.Select(x => Math.Exp(x - max)).ToArray();
                    var sum = e.Sum();
                    for (var c = 0; c < d; c++)
                    {
                        double o = 0;
                        for (var j = 0; j < t; j++) o += e[j] / sum * V[((bi * kvh + kv) * t + j) * d + c];
                        want[((bi * h + hi) * s + i) * d + c] = o;
                    }
                }
        Close(r.Span<float>(), want);
    }

    /// <summary>
    /// Prefill under a causal mask (4 past positions, then the queries): the blocked kernel skips the positions every
    /// query of a block has hidden, which must change nothing, hidden by −∞ or by float.MinValue (as exporters write
    /// it). With float.MinValue one query sees nothing: its softmax spreads over every position, skipped by none.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Grouped_query_attention_under_a_causal_mask_matches_softmax_of_scores(bool minValue)
    {
        const int h = 2, s = 9, t = 13, d = 32, past = t - s;
        const float scale = 0.3f;
        var hidden = minValue ? float.MinValue : float.NegativeInfinity;
        var q = Random([1, h, s, d], 11);
        var k = Random([1, h, t, d], 12);
        var v = Random([1, h, t, d], 13);
        var m = new float[s * t];
        for (var i = 0; i < s; i++)
            for (var j = 0; j < t; j++) m[i * t + j] = j <= past + i && !(minValue && i == 5) ? 0 : hidden;
        var r = Fused.GroupQueryAttention(q, k, v, Tensor.FromArray(DType.F32, [s, t], m), scale);
        var want = new double[h * s * d];
        var Q = q.Span<float>(); var K = k.Span<float>(); var V = v.Span<float>();
        for (var hi = 0; hi < h; hi++)
            for (var i = 0; i < s; i++)
            {
                var sc = new double[t];
                for (var j = 0; j < t; j++)
                {
                    double dot = 0;
                    for (var c = 0; c < d; c++) dot += Q[(hi * s + i) * d + c] * K[(hi * t + j) * d + c];
                    sc[j] = (float)(dot * scale) + m[i * t + j];
                }
                var max = sc.Max();
                var e = sc.Select(x => Math.Exp(x - max)).ToArray();
                for (var c = 0; c < d; c++)
                {
                    double o = 0;
                    for (var j = 0; j < t; j++) o += e[j] / e.Sum() * V[(hi * t + j) * d + c];
                    want[(hi * s + i) * d + c] = o;
                }
            }
        Close(r.Span<float>(), want);
    }

    [Fact]
    public void RmsNorm_rotary_silu_gelu_and_matmul_add_match_their_definitions()
    {
        var x = Random([3, 8], 5);
        var scale = Random([8], 6);
        var X = x.Span<float>().ToArray();
        var rms = new double[24];
        for (var r = 0; r < 3; r++)
        {
            var ms = Enumerable.Range(0, 8).Average(c => (double)X[r * 8 + c] * X[r * 8 + c]);
            for (var c = 0; c < 8; c++) rms[r * 8 + c] = X[r * 8 + c] / Math.Sqrt(ms + 1e-5) * scale.Span<float>()[c];
        }
        Close(Fused.RmsNorm(x, scale, 1e-5f).Span<float>(), rms);

        Close(Fused.Silu(x).Span<float>(), X.Select(v => v / (1 + Math.Exp(-v))).ToArray());
        // erf by its series, independent of the kernel's approximation
        static double Erf(double z) { double sum = 0, term = z; for (var n = 0; n < 60; n++) { sum += term / (2 * n + 1); term *= -z * z / (n + 1); } return 2 / Math.Sqrt(Math.PI) * sum; }
        Close(Fused.Gelu(x, tanh: false).Span<float>(), X.Select(v => 0.5 * v * (1 + Erf(v / Math.Sqrt(2)))).ToArray(), 1e-6);

        // Rotary on interleaved pairs and on halves, positions = rows of cos/sin.
        var cos = Random([3, 4], 7);
        var sin = Random([3, 4], 8);
        foreach (var interleaved in new[] { true, false })
        {
            var want = new double[24];
            for (var p = 0; p < 3; p++)
                for (var i = 0; i < 4; i++)
                {
                    int a = interleaved ? 2 * i : i, bIdx = interleaved ? 2 * i + 1 : i + 4;
                    double x0 = X[p * 8 + a], x1 = X[p * 8 + bIdx], c = cos.Span<float>()[p * 4 + i], sn = sin.Span<float>()[p * 4 + i];
                    want[p * 8 + a] = x0 * c - x1 * sn;
                    want[p * 8 + bIdx] = x0 * sn + x1 * c;
                }
            Close(Fused.Rotary(x, cos, sin, interleaved).Span<float>(), want);
        }

        // Rotary with positions along axis 1 of x [1, s, h, d] (cos [1, s, 1, d/2], as a model rotating before moving
        // heads forward exports it), with s = h so that reading positions along the wrong axis cannot pass.
        var xs = Random([1, 3, 3, 4], 11);
        var cosS = Random([1, 3, 1, 2], 12);
        var sinS = Random([1, 3, 1, 2], 13);
        var wantS = new double[36];
        for (var p = 0; p < 3; p++)
            for (var h = 0; h < 3; h++)
                for (var i = 0; i < 2; i++)
                {
                    var at = (p * 3 + h) * 4;
                    double x0 = xs.Span<float>()[at + 2 * i], x1 = xs.Span<float>()[at + 2 * i + 1], c = cosS.Span<float>()[p * 2 + i], sn = sinS.Span<float>()[p * 2 + i];
                    wantS[at + 2 * i] = x0 * c - x1 * sn;
                    wantS[at + 2 * i + 1] = x0 * sn + x1 * c;
                }
        Close(Fused.Rotary(xs, cosS, sinS, interleaved: true).Span<float>(), wantS);
        // cos/sin varying along two axes is refused, not misread.
        Assert.Throws<KernelException>(() => Fused.Rotary(xs, Random([3, 3, 2], 14), Random([3, 3, 2], 15), interleaved: true));

        var w = Random([8, 5], 9);
        var bias = Random([5], 10);
        var mm = new double[15];
        for (var r = 0; r < 3; r++)
            for (var j = 0; j < 5; j++)
            {
                double acc = bias.Span<float>()[j];
                for (var c = 0; c < 8; c++) acc += X[r * 8 + c] * (double)w.Span<float>()[c * 5 + j];
                mm[r * 5 + j] = Math.Max(0, acc);
            }
        Close(Fused.MatMulAdd(x, w, bias, "Relu").Span<float>(), mm);
    }
}

/// <summary>The tensor pool's size classes: bounded slack, and a slightly larger tensor reuses a freed buffer.</summary>
public sealed class TensorPoolTests
{
    [Fact]
    public void Size_classes_waste_at_most_an_eighth_and_let_growing_tensors_reuse_buffers()
    {
        foreach (var n in new[] { 0, 1, 1000, 1024, 1025, 4096, 65536, 65537, 92160, 1 << 20, 123_456_789 })
        {
            var c = TensorPool.ClassSize(n);
            Assert.True(c >= n && c <= n + n / 8 + 1, $"{n} → {c}");
            Assert.Equal(c, TensorPool.ClassSize(c));
        }
        var pool = new TensorPool();
        var saved = TensorPool.Current;
        TensorPool.Current = pool;
        try
        {
            var kv = Tensor.Uninitialized(DType.F32, [1, 6, 80, 48]); // 92,160 bytes: a KV cache after 80 tokens
            var storage = kv.Storage;
            pool.Return((byte[])storage);
            var longer = Tensor.Uninitialized(DType.F32, [1, 6, 81, 48]); // one token later
            Assert.Same(storage, longer.Storage);
            Assert.Equal(6 * 81 * 48 * 4, longer.ByteLength);
        }
        finally
        {
            TensorPool.Current = saved;
        }
    }
}
