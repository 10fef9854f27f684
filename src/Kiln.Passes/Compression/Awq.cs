using Kiln.Runtime.Weights;

namespace Kiln.Passes;

/// <summary>
/// AWQ (Lin et al., 2023) for <c>quantize{method=awq}</c>: activation-aware scaling. Input channels that carry large
/// activations matter most to the output, so their weight columns are scaled up by s_j = mean|x_j|^α before rounding
/// (they lose less to it) and the layer's input is divided by s (a Mul the pass inserts, so the product is unchanged
/// before rounding). α is searched on a grid of 20 points in [0, 1) for the smallest output error ‖X·Wᵀ − X·Ŵᵀ‖² on
/// the calibration activations; α = 0 is plain round-to-nearest, so the search never does worse than it on them.
/// Then, as AWQ does, each group's clipping range is searched too (symmetric formats): the scale that covers
/// 100%, 95%, … 50% of the group's largest magnitude, whichever gives that group the smallest output error.
/// </summary>
public sealed class Awq : IWeightQuantizer
{
    public const int GridPoints = 20;

    /// <summary>Calibration tokens the search measures the output error on (evenly spaced).</summary>
    public const int SearchTokens = 512;

    public bool NeedsCalibration => true;

    public QuantizedLayerResult Quantize(float[] rows, QuantizedLayout l, CalibrationWalk.LayerInputs x)
    {
        var (matrix, scale, _) = Search(rows, l, x.X, x.Tokens);
        return new QuantizedLayerResult(matrix, scale);
    }

    /// <summary>The best scaling: the quantized (scaled) matrix, s (null when α = 0 won) and the α chosen.</summary>
    public static (QuantizedMatrix Matrix, float[]? Scale, double Alpha) Search(float[] w, QuantizedLayout l, float[] x, int tokens)
    {
        int n = l.Rows, k = l.Columns;
        var meanAbs = new double[k];
        for (var t = 0; t < tokens; t++)
            for (var j = 0; j < k; j++) meanAbs[j] += Math.Abs(x[t * k + j]);
        for (var j = 0; j < k; j++) meanAbs[j] = Math.Max(meanAbs[j] / Math.Max(1, tokens), 1e-8);
        var sample = Enumerable.Range(0, Math.Min(tokens, SearchTokens)).Select(i => (int)((long)i * tokens / Math.Min(tokens, SearchTokens))).ToArray();
        // Reference outputs on the sample, once.
        var reference = new double[sample.Length * n];
        Parallel.For(0, n, r =>
        {
            for (var t = 0; t < sample.Length; t++)
            {
                double s = 0;
                for (var j = 0; j < k; j++) s += (double)x[sample[t] * k + j] * w[r * k + j];
                reference[t * n + r] = s;
            }
        });
        (QuantizedMatrix Matrix, float[]? Scale, double Alpha, double Error) best = default;
        best.Error = double.PositiveInfinity;
        for (var step = 0; step < GridPoints; step++)
        {
            var alpha = (double)step / GridPoints;
            var s = new float[k];
            for (var j = 0; j < k; j++) s[j] = (float)Math.Pow(meanAbs[j], alpha);
            // Centre the scales (geometric mean of the extremes at 1) so the weights keep their magnitude.
            var centre = Math.Sqrt(s.Max() * (double)s.Min());
            for (var j = 0; j < k; j++) s[j] = Math.Max((float)(s[j] / centre), 1e-4f);
            var scaled = new float[w.Length];
            for (var r = 0; r < n; r++)
                for (var j = 0; j < k; j++) scaled[r * k + j] = w[r * k + j] * s[j];
            var q = QuantizedWeights.Pack(scaled, l);
            var deq = q.Dequantize();
            var error = 0.0;
            var partial = new double[n];
            Parallel.For(0, n, r =>
            {
                double e = 0;
                for (var t = 0; t < sample.Length; t++)
                {
                    double y = 0;
                    for (var j = 0; j < k; j++) y += (double)x[sample[t] * k + j] / s[j] * deq[r * k + j];
                    var d = y - reference[t * n + r];
                    e += d * d;
                }
                partial[r] = e;
            });
            error = partial.Sum();
            if (error < best.Error) best = (q, step == 0 ? null : s, alpha, error);
        }
        var chosen = best.Scale;
        var final = best.Matrix!;
        if (l.Symmetric)
        {
            var scaled = new float[w.Length];
            for (var r = 0; r < n; r++)
                for (var j = 0; j < k; j++) scaled[r * k + j] = w[r * k + j] * (chosen?[j] ?? 1f);
            var xs = new float[sample.Length * k];
            for (var t = 0; t < sample.Length; t++)
                for (var j = 0; j < k; j++) xs[t * k + j] = x[sample[t] * k + j] / (chosen?[j] ?? 1f);
            final = QuantizedWeights.PackWith(scaled, l, ClipScales(scaled, l, xs, sample.Length), null);
        }
        return (final, chosen, best.Alpha);
    }

    public const int ClipSteps = 11;

    /// <summary>Per (row, group): the f16 scale among amax·(1 − 0.05·i)/steps, i &lt; <see cref="ClipSteps"/>, with the smallest output error on the inputs.</summary>
    public static Half[] ClipScales(float[] w, QuantizedLayout l, float[] x, int tokens)
    {
        int n = l.Rows, k = l.Columns;
        var scales = new Half[n * l.Groups];
        Parallel.For(0, n, r =>
        {
            var q = new float[l.Group];
            for (var g = 0; g < l.Groups; g++)
            {
                var k0 = g * l.Group;
                var width = Math.Min(l.Group, k - k0);
                var amax = 0f;
                for (var j = 0; j < width; j++) amax = Math.Max(amax, Math.Abs(w[r * k + k0 + j]));
                var bestError = double.PositiveInfinity;
                var bestScale = (Half)1f;
                for (var step = 0; step < ClipSteps && amax > 0; step++)
                {
                    var h = (Half)(amax * (1 - 0.05f * step) / (l.SymmetricZero - 1));
                    var scale = QuantizedWeights.FiniteScale(h);
                    for (var j = 0; j < width; j++)
                        q[j] = scale * (QuantizedWeights.Quantize(w[r * k + k0 + j], scale, l.SymmetricZero, l.MaxCode) - l.SymmetricZero);
                    double e = 0;
                    for (var t = 0; t < tokens; t++)
                    {
                        double d = 0;
                        for (var j = 0; j < width; j++) d += (double)x[t * k + k0 + j] * (w[r * k + k0 + j] - q[j]);
                        e += d * d;
                    }
                    if (e < bestError) { bestError = e; bestScale = h; }
                }
                scales[r * l.Groups + g] = bestScale;
            }
        });
        return scales;
    }
}
