using Kiln.Runtime.Weights;

namespace Kiln.Passes.Tests;

/// <summary>
/// Each quantization method's math on small matrices, measured as the layer's output error ‖X·Wᵀ − X·Ŵᵀ‖ against
/// round-to-nearest at the same format: GPTQ on inputs with correlated channels, AWQ on inputs with a few large ones.
/// </summary>
public sealed class CompressionMethodTests
{
    private static float[] Gaussian(Random rng, int n, double sigma = 1)
    {
        var v = new float[n];
        for (var i = 0; i < n; i++) v[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }

    private static double OutputError(float[] x, int tokens, int k, float[] w, float[] q, int rows)
    {
        double e = 0;
        for (var t = 0; t < tokens; t++)
            for (var r = 0; r < rows; r++)
            {
                double d = 0;
                for (var j = 0; j < k; j++) d += (double)x[t * k + j] * (w[r * k + j] - q[r * k + j]);
                e += d * d;
            }
        return Math.Sqrt(e);
    }

    /// <summary>Inputs X = Z·A: 8 latent factors mixed into 64 channels (strongly correlated), plus a little noise.</summary>
    private static float[] CorrelatedInputs(Random rng, int tokens, int k)
    {
        var z = Gaussian(rng, tokens * 8);
        var a = Gaussian(rng, 8 * k);
        var noise = Gaussian(rng, tokens * k, 0.05);
        var x = new float[tokens * k];
        for (var t = 0; t < tokens; t++)
            for (var j = 0; j < k; j++)
            {
                double s = noise[t * k + j];
                for (var f = 0; f < 8; f++) s += z[t * 8 + f] * a[f * k + j];
                x[t * k + j] = (float)s;
            }
        return x;
    }

    [Theory]
    [InlineData(4, 32, false)]
    [InlineData(4, 64, true)]
    [InlineData(8, 32, false)]
    public void Gptq_output_error_is_below_round_to_nearest_on_correlated_inputs(int bits, int group, bool actOrder)
    {
        var rng = new Random(7);
        const int rows = 24, k = 64, tokens = 256;
        var w = Gaussian(rng, rows * k);
        var x = CorrelatedInputs(rng, tokens, k);
        var l = QuantizedLayout.Create(bits, rows, k, group, symmetric: true);
        var rtn = QuantizedWeights.Pack(w, l).Dequantize();
        var packed = Gptq.Run(w, l, x, tokens, actOrder: actOrder, block: 16);
        var gptq = packed.Dequantize();
        var eRtn = OutputError(x, tokens, k, w, rtn, rows);
        var eGptq = OutputError(x, tokens, k, w, gptq, rows);
        Assert.True(eGptq < 0.8 * eRtn, $"GPTQ output error {eGptq:0.###} is not below RTN's {eRtn:0.###}");
        // Every GPTQ weight is a code of its group's scale: packing its values again gives the same codes.
        Assert.Equal(packed.Codes, QuantizedWeights.PackWith(gptq, l, packed.Scales, packed.Zeros).Codes);
    }

    [Fact]
    public void Gptq_inverse_hessian_factor_reproduces_the_inverse()
    {
        var rng = new Random(3);
        const int k = 12, tokens = 40;
        var x = Gaussian(rng, tokens * k);
        var h = Gptq.Hessian(x, tokens, k);
        for (var i = 0; i < k; i++) h[i * k + i] += 0.01;
        var u = Gptq.InverseCholeskyUpper(h, k);
        // (UᵀU)·H = I
        for (var i = 0; i < k; i++)
            for (var j = 0; j < k; j++)
            {
                double s = 0;
                for (var m = 0; m < k; m++)
                {
                    double inv = 0;
                    for (var t = 0; t < k; t++) inv += u[t * k + i] * u[t * k + m];
                    s += inv * h[m * k + j];
                }
                Assert.Equal(i == j ? 1.0 : 0.0, s, 6);
            }
    }

    [Fact]
    public void Awq_search_picks_scales_that_reduce_the_output_error()
    {
        var rng = new Random(11);
        const int rows = 32, k = 128, tokens = 256;
        var w = Gaussian(rng, rows * k);
        var x = Gaussian(rng, tokens * k);
        // A few salient channels carry activations 30× larger, as LLM hidden states do.
        foreach (var salient in new[] { 3, 40, 77, 100 })
            for (var t = 0; t < tokens; t++) x[t * k + salient] *= 30;
        var l = QuantizedLayout.Create(4, rows, k, 128, symmetric: true);
        var rtn = QuantizedWeights.Pack(w, l).Dequantize();
        var (matrix, scale, alpha) = Awq.Search(w, l, x, tokens);
        Assert.NotNull(scale);
        Assert.True(alpha > 0);
        var awq = matrix.Dequantize();
        for (var r = 0; r < rows; r++)
            for (var j = 0; j < k; j++) awq[r * k + j] /= scale![j];
        var eRtn = OutputError(x, tokens, k, w, rtn, rows);
        var eAwq = OutputError(x, tokens, k, w, awq, rows);
        Assert.True(eAwq < 0.9 * eRtn, $"AWQ output error {eAwq:0.###} (alpha {alpha}) is not below RTN's {eRtn:0.###}");
    }

    [Theory]
    [InlineData("unstructured")]
    [InlineData("2:4")]
    [InlineData("4:8")]
    public void Sparsegpt_output_error_is_below_magnitude_and_every_pattern_holds(string patternName)
    {
        var rng = new Random(5);
        const int rows = 16, k = 64, tokens = 256;
        var w = Gaussian(rng, rows * k);
        var x = CorrelatedInputs(rng, tokens, k);
        var pattern = SparsityPattern.Parse(patternName, null);
        var magnitude = new MagnitudePruner().Prune(w, rows, k, pattern, null);
        var sparsegpt = SparseGptPruner.Run(w, rows, k, pattern, x, tokens, block: 16);
        foreach (var pruned in new[] { magnitude, sparsegpt })
        {
            Assert.Equal(rows * k / 2, pruned.Count(v => v == 0));
            if (!pattern.Unstructured)
                for (var r = 0; r < rows; r++)
                    for (var g = 0; g < k; g += pattern.Group)
                        Assert.Equal(pattern.PrunedPerGroup, pruned.AsSpan(r * k + g, pattern.Group).ToArray().Count(v => v == 0));
        }
        var eMagnitude = OutputError(x, tokens, k, w, magnitude, rows);
        var eSparseGpt = OutputError(x, tokens, k, w, sparsegpt, rows);
        Assert.True(eSparseGpt < 0.7 * eMagnitude, $"{patternName}: SparseGPT output error {eSparseGpt:0.###} is not below magnitude's {eMagnitude:0.###}");
    }

    [Fact]
    public void Gptq_keeps_pruned_weights_at_zero()
    {
        var rng = new Random(9);
        const int rows = 8, k = 64, tokens = 128;
        var w = new MagnitudePruner().Prune(Gaussian(rng, rows * k), rows, k, SparsityPattern.Parse("2:4", null), null);
        var x = CorrelatedInputs(rng, tokens, k);
        foreach (var symmetric in new[] { true, false })
        {
            var q = Gptq.Run(w, QuantizedLayout.Create(4, rows, k, 32, symmetric), x, tokens, block: 16).Dequantize();
            for (var i = 0; i < w.Length; i++)
                if (w[i] == 0) Assert.True(q[i] == 0, $"sym={symmetric}: pruned weight {i} came back as {q[i]}");
            Assert.Contains(q, v => v != 0);
        }
    }
}
