using Kiln.Runtime.Kernels;
using Kiln.Runtime.Weights;

namespace Kiln.Evaluator.Tests;

/// <summary>
/// Quantized weight formats and kernels: packing round-trips exactly, round-to-nearest error stays within half a
/// step (a step, asymmetric), and both kernel paths (AVX-VNNI and portable) match a double-precision product of the dequantized weights
/// with the activations as the kernel rounds them (per 32-block: int8 for 4-bit weights, int16 for 8-bit), for every
/// layout the registry accepts.
/// </summary>
[Collection("quantized kernels")]
public sealed class QuantizedKernelTests
{
    private static float[] Random(int n, int seed, float outlierEvery = 0)
    {
        var rng = new Random(seed);
        var v = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        if (outlierEvery > 0) for (var i = 0; i < n; i += (int)outlierEvery) v[i] *= 20;
        return v;
    }

    public static TheoryData<int, int, int, int, bool> Layouts => new()
    {
        // bits, rows, columns, group, symmetric
        { 4, 37, 96, 32, true },
        { 4, 16, 256, 128, true },
        { 4, 21, 100, 64, false },   // partial last group, padded last block
        { 4, 9, 20, 0, true },       // per-channel, one short block
        { 4, 12, 192, 96, true },    // groups of 3 blocks: a pair of blocks may straddle two groups
        { 4, 8, 224, 0, true },      // per-channel over 7 blocks (odd)
        { 4, 8, 256, 64, true },
        { 8, 33, 96, 0, true },
        { 8, 12, 130, 64, false },
        { 8, 5, 64, 32, true },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Packing_round_trips_and_rounds_to_the_nearest_code(int bits, int rows, int columns, int group, bool symmetric)
    {
        var l = QuantizedLayout.Create(bits, rows, columns, group, symmetric);
        var w = Random(rows * columns, 1);
        var q = QuantizedWeights.Pack(w, l);
        var deq = q.Dequantize();
        for (var r = 0; r < rows; r++)
            for (var k = 0; k < columns; k++)
            {
                // Half a step; asymmetric formats round the zero point too, which can cost up to a step at the range's ends.
                var s = q.Scale(r, l.GroupOf(k));
                Assert.InRange(Math.Abs(deq[r * columns + k] - w[r * columns + k]), 0, (symmetric ? s / 2 : s) + 1e-6f);
            }
        // Packing the dequantized matrix with the same scales gives the same bytes.
        var again = QuantizedWeights.PackWith(deq, l, q.Scales, q.Zeros);
        Assert.Equal(q.Codes, again.Codes);
        Assert.Equal(l.CodeBytes, q.Codes.Length);
    }

    [Fact]
    public void Layout_reports_bits_per_weight_and_refuses_odd_groups()
    {
        Assert.Equal(4.5, QuantizedLayout.Create(4, 64, 256, 32, true).BitsPerWeight, 3);
        Assert.Equal(4.75, QuantizedLayout.Create(4, 64, 256, 32, false).BitsPerWeight, 3);
        Assert.Equal(4.125, QuantizedLayout.Create(4, 64, 256, 128, true).BitsPerWeight, 3);
        Assert.Equal(1, QuantizedLayout.Create(8, 4, 100, 512, true).Groups);
        Assert.True(QuantizedLayout.Create(4, 4, 100, 64, true).HasPartialGroup);
        Assert.Throws<Kiln.Runtime.KernelException>(() => QuantizedLayout.Create(4, 4, 100, 48, true));
        Assert.Throws<Kiln.Runtime.KernelException>(() => QuantizedLayout.Create(3, 4, 100, 32, true));
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Kernels_match_the_dequantized_reference(int bits, int rows, int columns, int group, bool symmetric)
    {
        var l = QuantizedLayout.Create(bits, rows, columns, group, symmetric);
        var q = QuantizedWeights.Pack(Random(rows * columns, 2), l);
        var deq = q.Dequantize();
        // 1–4 rows: decode's integer kernels; 16 and more (DequantizedGemmRows): prefill's f32 GEMM over dequantized weights.
        foreach (var m in new[] { 1, 3, 4, QuantizedMatMul.DequantizedGemmRows, 37 })
        {
            var x = Random(m * columns, 3, outlierEvery: 17);
            var xr = QuantizedMatMul.RoundActivations(x, columns, bits);
            var expected = new double[m * rows];
            for (var i = 0; i < m; i++)
                for (var r = 0; r < rows; r++)
                {
                    double s = 0;
                    for (var k = 0; k < columns; k++) s += (double)xr[i * columns + k] * deq[r * columns + k];
                    expected[i * rows + r] = s;
                }
            {
                foreach (var integer in new[] { false, true })
                {
                    // The x86 integer path needs AVX2 and FMA (it takes vpdpbusd where AVX-VNNI exists, else vpmaddubsw).
                    if (integer && !QuantizedMatMul.IntegerDotProductAvailable) continue;
                    using var path = QuantizedMatMul.UseIntegerPath(integer);
                    var y = new float[m * rows];
                    QuantizedMatMul.Multiply(x, m, l, q.Codes, q.Scales, q.Zeros, y);
                    for (var i = 0; i < y.Length; i++)
                        Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-4 * (1 + Math.Abs(expected[i])), $"integer={integer} m={m} y[{i}] = {y[i]}, expected {expected[i]}");
                    // Accumulating adds onto what y holds.
                    QuantizedMatMul.Multiply(x, m, l, q.Codes, q.Scales, q.Zeros, y, accumulate: true);
                    for (var i = 0; i < y.Length; i++) Assert.True(Math.Abs(y[i] - 2 * expected[i]) <= 2e-4 * (1 + Math.Abs(expected[i])));
                }
            }
        }
    }

    [Theory]
    [InlineData(true, 3)]
    [InlineData(false, 3)]
    [InlineData(true, 20)]
    public void Int8_activations_for_8_bit_weights_match_their_reference(bool symmetric, int m)
    {
        var l = QuantizedLayout.Create(8, 20, 160, 32, symmetric);
        var q = QuantizedWeights.Pack(Random(20 * 160, 6), l);
        var deq = q.Dequantize();
        var x = Random(m * 160, 7, outlierEvery: 19);
        var xr = QuantizedMatMul.RoundActivations(x, 160, 8, activationBits: 8);
        var y = new float[m * 20];
        QuantizedMatMul.Multiply(x, m, l, q.Codes, q.Scales, q.Zeros, y, activationBits: 8);
        for (var i = 0; i < m; i++)
            for (var r = 0; r < 20; r++)
            {
                double e = 0;
                for (var k = 0; k < 160; k++) e += (double)xr[i * 160 + k] * deq[r * 160 + k];
                Assert.True(Math.Abs(y[i * 20 + r] - e) <= 1e-4 * (1 + Math.Abs(e)), $"y[{i}, {r}] = {y[i * 20 + r]}, expected {e}");
            }
    }

    [Fact]
    public void Prefill_reuses_a_rounded_input_only_while_it_is_unchanged()
    {
        const int m = 20, k = 96;
        var x = Random(m * k, 11, outlierEvery: 13);
        double[] Reference(float[] input, QuantizedMatrix q, int rows)
        {
            var xr = QuantizedMatMul.RoundActivations(input, k, q.Layout.Bits);
            var deq = q.Dequantize();
            var r = new double[m * rows];
            for (var i = 0; i < m; i++)
                for (var n = 0; n < rows; n++)
                    for (var c = 0; c < k; c++) r[i * rows + n] += (double)xr[i * k + c] * deq[n * k + c];
            return r;
        }
        void Check(float[] input, QuantizedMatrix q, int rows)
        {
            var y = new float[m * rows];
            QuantizedMatMul.Multiply(input, m, q.Layout, q.Codes, q.Scales, q.Zeros, y);
            var e = Reference(input, q, rows);
            for (var i = 0; i < y.Length; i++) Assert.True(Math.Abs(y[i] - e[i]) <= 1e-4 * (1 + Math.Abs(e[i])), $"y[{i}] = {y[i]}, expected {e[i]}");
        }
        var first = QuantizedWeights.Pack(Random(24 * k, 12), QuantizedLayout.Create(4, 24, k, 32, true));
        var second = QuantizedWeights.Pack(Random(40 * k, 13), QuantizedLayout.Create(4, 40, k, 32, true));
        var wide = QuantizedWeights.Pack(Random(16 * k, 14), QuantizedLayout.Create(8, 16, k, 32, true));
        Check(x, first, 24);
        Check(x, second, 40);  // the same x: its rounded panels are reused
        x[5 * k + 7] += 0.25f; // the same array, one element changed
        Check(x, second, 40);
        Check(x, wide, 16);    // 8-bit weights round it to int16: not the same panels
    }

    [Theory]
    [InlineData(3)]
    [InlineData(20)]
    public void Static_activation_scales_round_every_row_with_the_same_block_scales_and_clamp(int m)
    {
        var l = QuantizedLayout.Create(8, 20, 160, 32, true);
        var q = QuantizedWeights.Pack(Random(20 * 160, 6), l);
        var deq = q.Dequantize();
        var x = Random(m * 160, 8, outlierEvery: 23);
        // Scales calibrated on a narrower range than x reaches: the outliers clamp at ±127 steps.
        var scales = Enumerable.Range(0, l.Blocks).Select(b => 0.5f / 127f * (b + 1)).ToArray();
        var xr = QuantizedMatMul.RoundActivations(x, 160, 8, activationBits: 8, activationScales: scales);
        for (var i = 0; i < xr.Length; i++)
        {
            var s = scales[i % 160 / 32];
            Assert.InRange(Math.Abs(xr[i]), 0, 127 * s + 1e-6f);
            if (Math.Abs(x[i]) <= 127 * s) Assert.InRange(Math.Abs(xr[i] - x[i]), 0, s / 2 + 1e-6f);
        }
        var y = new float[m * 20];
        QuantizedMatMul.Multiply(x, m, l, q.Codes, q.Scales, q.Zeros, y, activationBits: 8, activationScales: scales);
        for (var i = 0; i < m; i++)
            for (var r = 0; r < 20; r++)
            {
                double e = 0;
                for (var k = 0; k < 160; k++) e += (double)xr[i * 160 + k] * deq[r * 160 + k];
                Assert.True(Math.Abs(y[i * 20 + r] - e) <= 1e-4 * (1 + Math.Abs(e)), $"y[{i}, {r}] = {y[i * 20 + r]}, expected {e}");
            }
        Assert.Throws<Kiln.Runtime.KernelException>(() => QuantizedMatMul.Multiply(x, m, l, q.Codes, q.Scales, q.Zeros, y, activationBits: 8, activationScales: scales[..2]));
    }

    [Theory]
    [InlineData(4, 127f)]
    [InlineData(8, 32767f)]
    public void Activation_rounding_error_is_within_half_a_step_of_each_block(int weightBits, float steps)
    {
        var x = Random(100, 4, outlierEvery: 33);
        var xr = QuantizedMatMul.RoundActivations(x, 100, weightBits);
        for (var b = 0; b < 4; b++)
        {
            var block = x.Skip(b * 32).Take(32).ToArray();
            var step = block.Max(Math.Abs) / steps;
            for (var k = 0; k < block.Length; k++) Assert.InRange(Math.Abs(xr[b * 32 + k] - block[k]), 0, step / 2 + 1e-6f);
        }
    }

    [Fact]
    public void Gather_reads_dequantized_rows()
    {
        var l = QuantizedLayout.Create(4, 10, 64, 32, true);
        var q = QuantizedWeights.Pack(Random(640, 5), l);
        var deq = q.Dequantize();
        var y = new float[2 * 64];
        QuantizedOps.GatherRows(l, q.Codes, q.Scales, default, [7, -1], y);
        Assert.Equal(deq.AsSpan(7 * 64, 64).ToArray(), y.AsSpan(0, 64).ToArray());
        Assert.Equal(deq.AsSpan(9 * 64, 64).ToArray(), y.AsSpan(64, 64).ToArray());
    }
}
