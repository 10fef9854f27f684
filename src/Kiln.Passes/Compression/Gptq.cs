using Kiln.Runtime.Weights;

namespace Kiln.Passes;

/// <summary>
/// GPTQ (Frantar et al., 2022) for <c>quantize{method=gptq}</c>: quantizes a layer's weight one input column at a time
/// and spreads each column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of
/// the layer's squared output error, H = 2·XᵀX/T over the calibration activations X. Lazy batch updates: the error
/// of a block of <c>block</c> columns reaches the rest of the matrix in one product. <c>damp</c> (percent of the mean
/// diagonal, default 1) keeps H invertible; inputs that are always zero are dropped. <c>act-order=true</c> takes
/// columns in order of decreasing Hessian diagonal; the group scales are then fixed from the original weights first
/// (static groups), because a group must stay a run of consecutive columns in the packed layout. Weights that are
/// exactly zero (pruned by an earlier <c>prune</c>) stay zero.
/// </summary>
public sealed class Gptq(PassOptions options) : IWeightQuantizer
{
    private readonly double _damp = options.Int("damp", 1, 0, 100) / 100.0;
    private readonly bool _actOrder = options.Bool("act-order", false);
    private readonly int _block = (int)options.Int("block", 128, 1, 1 << 16);

    public bool NeedsCalibration => true;

    public QuantizedLayerResult Quantize(float[] rows, QuantizedLayout l, CalibrationWalk.LayerInputs x) =>
        new(Run(rows, l, x.X, x.Tokens, _damp, _actOrder, _block), null);

    /// <summary>The GPTQ procedure on W [rows, columns] with calibration inputs X [tokens, columns].</summary>
    public static QuantizedMatrix Run(float[] rows, QuantizedLayout l, float[] x, int tokens, double damp = 0.01, bool actOrder = false, int block = 128)
    {
        int n = l.Rows, k = l.Columns;
        var h = Hessian(x, tokens, k);
        var w = rows.Select(v => (double)v).ToArray();
        // A weight that is exactly zero was pruned (prune before quantize): it stays zero, and the kept weights take
        // up the error, as SparseGPT's joint sparse and quantized form wants.
        var pruned = rows.Select(v => v == 0).ToArray();
        DropDeadInputs(h, w, n, k);
        var perm = Enumerable.Range(0, k).ToArray();
        if (actOrder) perm = perm.OrderByDescending(i => h[i * k + i]).ThenBy(i => i).ToArray();
        var hp = new double[k * k];
        for (var i = 0; i < k; i++)
            for (var j = 0; j < k; j++) hp[i * k + j] = h[perm[i] * k + perm[j]];
        var u = DampedInverseCholeskyUpper(hp, k, damp);

        var scales = new Half[n * l.Groups];
        var zeros = l.Symmetric ? null : new byte[n * l.Groups];
        var haveParams = new bool[l.Groups];
        void SetParams(int g, double[] source)
        {
            var k0 = g * l.Group;
            var width = Math.Min(l.Group, k - k0);
            var buf = new float[width];
            for (var r = 0; r < n; r++)
            {
                for (var j = 0; j < width; j++) buf[j] = pruned[r * k + k0 + j] ? 0f : (float)source[r * k + k0 + j];
                var (s, z) = QuantizedWeights.RoundToNearestParameters(buf, l);
                scales[r * l.Groups + g] = (Half)s;
                if (zeros is not null) zeros[r * l.Groups + g] = (byte)z;
            }
            haveParams[g] = true;
        }
        if (actOrder) for (var g = 0; g < l.Groups; g++) SetParams(g, w);

        var q = new float[n * k];
        for (var b0 = 0; b0 < k; b0 += block)
        {
            var b1 = Math.Min(k, b0 + block);
            var err = new double[n * (b1 - b0)];
            for (var i = b0; i < b1; i++)
            {
                var col = perm[i];
                var g = l.GroupOf(col);
                if (!haveParams[g]) SetParams(g, w);
                var d = u[i * k + i];
                Parallel.For(0, n, r =>
                {
                    var s = QuantizedWeights.FiniteScale(scales[r * l.Groups + g]);
                    var z = zeros is null ? l.SymmetricZero : zeros[r * l.Groups + g];
                    var wv = w[r * k + col];
                    var deq = pruned[r * k + col] ? 0 : s * (QuantizedWeights.Quantize((float)wv, s, z, l.MaxCode) - z);
                    q[r * k + col] = deq;
                    var e = (wv - deq) / d;
                    err[r * (b1 - b0) + i - b0] = e;
                    for (var j = i + 1; j < b1; j++) w[r * k + perm[j]] -= e * u[i * k + j];
                });
            }
            PropagateBlockError(w, err, u, n, k, b0, b1, perm);
        }
        return QuantizedWeights.PackWith(q, l, scales, zeros);
    }

    /// <summary>An input that is always zero (H_ii = 0): its weights change nothing, so they go, and H gets a 1 there.</summary>
    public static void DropDeadInputs(double[] h, double[] w, int n, int k)
    {
        for (var i = 0; i < k; i++)
            if (h[i * k + i] == 0)
            {
                h[i * k + i] = 1;
                for (var r = 0; r < n; r++) w[r * k + i] = 0;
            }
    }

    /// <summary>U of (H + damp·mean(diag H)·I)⁻¹: the damping (a fraction of the mean diagonal) keeps H invertible.</summary>
    public static double[] DampedInverseCholeskyUpper(double[] h, int k, double damp)
    {
        var mean = Enumerable.Range(0, k).Average(i => h[i * k + i]);
        for (var i = 0; i < k; i++) h[i * k + i] += damp * mean;
        return InverseCholeskyUpper(h, k);
    }

    /// <summary>
    /// The lazy batch update: the errors of block [b0, b1) (err [rows, b1 − b0], already divided by U's diagonal) reach
    /// the columns after it in one pass; column j of U's order is column perm[j] of W.
    /// </summary>
    public static void PropagateBlockError(double[] w, double[] err, double[] u, int n, int k, int b0, int b1, int[] perm)
    {
        if (b1 == k) return;
        Parallel.For(0, n, r =>
        {
            for (var i = b0; i < b1; i++)
            {
                var e = err[r * (b1 - b0) + i - b0];
                if (e == 0) continue;
                for (var j = b1; j < k; j++) w[r * k + perm[j]] -= e * u[i * k + j];
            }
        });
    }

    /// <summary>2·XᵀX / T, [columns, columns].</summary>
    public static double[] Hessian(float[] x, int tokens, int k)
    {
        var h = new double[k * k];
        Parallel.For(0, k, i =>
        {
            for (var t = 0; t < tokens; t++)
            {
                var xi = (double)x[t * k + i];
                if (xi == 0) continue;
                var row = t * k;
                for (var j = 0; j <= i; j++) h[i * k + j] += xi * x[row + j];
            }
        });
        var scale = 2.0 / Math.Max(1, tokens);
        for (var i = 0; i < k; i++)
            for (var j = 0; j <= i; j++)
            {
                var v = h[i * k + j] * scale;
                h[i * k + j] = v;
                h[j * k + i] = v;
            }
        return h;
    }

    /// <summary>The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), as GPTQ's error propagation reads it.</summary>
    public static double[] InverseCholeskyUpper(double[] h, int k)
    {
        var lower = Cholesky(h, k);
        // H⁻¹ = L⁻ᵀ L⁻¹: invert the lower factor by forward substitution, then multiply.
        var inv = new double[k * k];
        for (var c = 0; c < k; c++)
        {
            for (var i = c; i < k; i++)
            {
                var s = i == c ? 1.0 : 0.0;
                for (var j = c; j < i; j++) s -= lower[i * k + j] * inv[j * k + c];
                inv[i * k + c] = s / lower[i * k + i];
            }
        }
        var hinv = new double[k * k];
        Parallel.For(0, k, i =>
        {
            for (var j = 0; j <= i; j++)
            {
                double s = 0;
                for (var t = i; t < k; t++) s += inv[t * k + i] * inv[t * k + j];
                hinv[i * k + j] = s;
                hinv[j * k + i] = s;
            }
        });
        var l2 = Cholesky(hinv, k);
        var upper = new double[k * k];
        for (var i = 0; i < k; i++)
            for (var j = i; j < k; j++) upper[i * k + j] = l2[j * k + i];
        return upper;
    }

    private static double[] Cholesky(double[] a, int k)
    {
        var l = new double[k * k];
        for (var j = 0; j < k; j++)
        {
            var d = a[j * k + j];
            for (var t = 0; t < j; t++) d -= l[j * k + t] * l[j * k + t];
            if (d <= 0) throw new Kiln.Ir.Diagnostics.KilnException(new Kiln.Ir.Diagnostics.Diagnostic(Kiln.Ir.Diagnostics.DiagnosticCode.InvalidPipeline,
                "pass 'quantize': GPTQ's damped Hessian is not positive definite (raise damp=, a percentage of its mean diagonal)"));
            var ljj = Math.Sqrt(d);
            l[j * k + j] = ljj;
            Parallel.For(j + 1, k, i =>
            {
                var s = a[i * k + j];
                for (var t = 0; t < j; t++) s -= l[i * k + t] * l[j * k + t];
                l[i * k + j] = s / ljj;
            });
        }
        return l;
    }
}
