using MathNet.Numerics.LinearAlgebra;
using Kiln.Runtime.Weights;

namespace Kiln.Passes;

/// <summary>
/// A refit layer's new parameters and its output error against the teacher before and after: ‖student − teacher‖ over
/// the calibration tokens (residual included), relative to the teacher's product output. <see cref="Damp"/> is the ridge
/// the held-out tokens chose; a refit they did not support is <see cref="Refused"/>, its values the old ones.
/// </summary>
public sealed record RefitResult(float[] Values, float[]? Bias, double ErrorBefore, double ErrorAfter, double Change)
{
    public double Damp { get; init; }

    /// <summary>Which of the layer's solvers was chosen (by its position).</summary>
    public int Solver { get; init; }

    /// <summary>Why the parameters were kept as they were; null when the refit was made.</summary>
    public string? Refused { get; init; }
}

/// <summary>
/// The refits <c>reconstruct</c> makes from <see cref="RefitEquations"/>. Each output's parameters θ minimize
/// ‖Z·Mθ − y‖² + λ‖θ − θ₀‖² (M picks or groups the inputs that parameter multiplies; θ₀ the values before; λ = damp ×
/// the mean of the system's diagonal): the ridge pulls what the calibration tokens do not determine back to what it
/// was, not to zero. The damp is chosen on held-out tokens (the last quarter of each calibration sample): each
/// candidate is fitted on the rest and judged on them, and when none lowers their error the layer keeps its
/// parameters — with few tokens per parameter a least-squares refit can fit the calibration set and lose elsewhere.
/// The chosen damp is then fitted on all tokens.
/// </summary>
public static class LayerRefit
{
    /// <summary>The damps tried (fractions of the mean diagonal), when the pass's option does not fix one.</summary>
    public static readonly IReadOnlyList<double> Damps = [0.001, 0.01, 0.1, 1];

    /// <summary>A candidate refit: the new parameters (and bias) from the equations at a damp.</summary>
    public delegate (float[] Values, float[]? Bias) Solver(RefitEquations e, double damp);

    /// <summary>Output j's parameters over G's rows (weights by input, then the bias), for the parameters given.</summary>
    public delegate Func<int, double[]> Expansion(float[] values, float[]? bias);

    /// <param name="fit">the equations over the tokens candidates are fitted on</param>
    /// <param name="held">over the held-out tokens; null when there are too few to hold any back (then the first damp of <paramref name="damps"/> above 0.5 % is used)</param>
    /// <param name="solvers">the ways to refit (one for most layers; a low-rank pair has two): every one is tried at every damp</param>
    public static RefitResult Choose(RefitEquations fit, RefitEquations? held, IReadOnlyList<double> damps, float[] values, float[]? bias, IReadOnlyList<Solver> solvers, Expansion expand, Func<float[], float[]?, float[], float[]?, double>? change = null)
    {
        var all = held is null ? fit : RefitEquations.Combine(fit, held);
        var before = Relative(all, Errors(all, expand(values, bias)));
        var (solve, chosen, which) = (solvers[0], damps.FirstOrDefault(d => d >= 0.005, damps[^1]), 0);
        if (held is not null)
        {
            var best = Relative(held, Errors(held, expand(values, bias)));
            chosen = double.NaN;
            foreach (var s in solvers)
                foreach (var d in damps)
                {
                    var (v, b) = s(fit, d);
                    var e = Relative(held, Errors(held, expand(v, b)));
                    if (e < best) (best, solve, chosen, which) = (e, s, d, solvers.ToList().IndexOf(s));
                }
            if (double.IsNaN(chosen))
                return new RefitResult(values, bias, before, before, 0) { Refused = "no refit lowered the error on the held-out calibration tokens" };
        }
        var (fresh, freshBias) = solve(all, chosen);
        var after = Relative(all, Errors(all, expand(fresh, freshBias)));
        if (after >= before) return new RefitResult(values, bias, before, before, 0) { Refused = "the refit did not lower the error" };
        var moved = change?.Invoke(values, bias, fresh, freshBias) ?? Quantize.RelativeError([.. values, .. bias ?? []], [.. fresh, .. freshBias ?? []]);
        return new RefitResult(fresh, freshBias, before, after, moved) { Damp = chosen, Solver = which };
    }

    /// <summary>
    /// A float layer's rows [outputs, inputs] (and bias): every non-zero weight moves, every zero stays zero (a pruned
    /// layer keeps its mask; a dense one, a structurally pruned one among them, moves entirely).
    /// </summary>
    public static (float[] Rows, float[]? Bias) SolveRows(RefitEquations e, float[] rows, float[]? bias, double damp)
    {
        int k = e.Inputs, m = e.Size, n = e.Outputs;
        var fresh = (float[])rows.Clone();
        var freshBias = (float[]?)bias?.Clone();
        var theta0 = RowsExpansion(k, n)(rows, bias);
        var full = Enumerable.Range(0, n).Where(j => Enumerable.Range(0, k).All(a => rows[(long)j * k + a] != 0)).ToList();
        if (full.Count > 0)
        {
            // Outputs with no zero share G: one factorization for all of them.
            var lhs = Damped(Matrix<double>.Build.Dense(m, m, (a, b) => e.G[a * m + b]), damp, out var lambda);
            var rhs = Matrix<double>.Build.Dense(m, full.Count, (a, c) => e.P[a * n + full[c]] + lambda * theta0(full[c])[a]);
            var solution = Solve(lhs, rhs);
            for (var c = 0; c < full.Count; c++)
            {
                var j = full[c];
                for (var a = 0; a < k; a++) fresh[(long)j * k + a] = (float)solution[a, c];
                if (e.Bias) freshBias![j] = (float)solution[k, c];
            }
        }
        var fullSet = full.ToHashSet();
        Parallel.For(0, n, j =>
        {
            if (fullSet.Contains(j)) return;
            var kept = Enumerable.Range(0, k).Where(a => rows[(long)j * k + a] != 0).Concat(e.Bias ? [k] : []).ToArray();
            if (kept.Length == 0) return;
            var lhs = Damped(Matrix<double>.Build.Dense(kept.Length, kept.Length, (a, b) => e.G[kept[a] * m + kept[b]]), damp, out var lambda);
            var t0 = theta0(j);
            var rhs = Matrix<double>.Build.Dense(kept.Length, 1, (a, _) => e.P[kept[a] * n + j] + lambda * t0[kept[a]]);
            var solution = Solve(lhs, rhs);
            for (var a = 0; a < kept.Length; a++)
            {
                if (kept[a] < k) fresh[(long)j * k + kept[a]] = (float)solution[a, 0];
                else freshBias![j] = (float)solution[a, 0];
            }
        });
        return (fresh, freshBias);
    }

    /// <summary>Rows [outputs, inputs] (and bias) as output j's parameters.</summary>
    public static Expansion RowsExpansion(int inputs, int outputs) => (rows, bias) => j =>
    {
        var t = new double[inputs + (bias is null ? 0 : 1)];
        for (var a = 0; a < inputs; a++) t[a] = rows[(long)j * inputs + a];
        if (bias is not null) t[inputs] = bias[j];
        return t;
    };

    /// <summary>
    /// A quantized layer's group scales [outputs, groups] (and bias), its codes fixed: <paramref name="unit"/> holds each
    /// row dequantized at scale 1 (code − zero point), so output j is Σ_g s_jg·(Z_g·unit_jg); <paramref name="scales"/>
    /// as the kernels read them. New scales are rounded to f16, as stored.
    /// </summary>
    public static (float[] Scales, float[]? Bias) SolveScales(RefitEquations e, float[] unit, QuantizedLayout layout, float[] scales, float[]? bias, double damp)
    {
        int k = e.Inputs, m = e.Size, n = e.Outputs, groups = layout.Groups, size = groups + (e.Bias ? 1 : 0);
        var fresh = (float[])scales.Clone();
        var freshBias = (float[]?)bias?.Clone();
        Parallel.For(0, n, j =>
        {
            var c = unit.AsSpan(j * k, k);
            // T[a, g] = Σ_{b in g} G[a, b]·c_b, for every row a of G (the bias's too).
            var t = new double[m * groups];
            for (var a = 0; a < m; a++)
                for (var b = 0; b < k; b++) t[a * groups + layout.GroupOf(b)] += e.G[a * m + b] * c[b];
            var lhs = Matrix<double>.Build.Dense(size, size);
            var rhs = new double[size];
            for (var a = 0; a < k; a++)
            {
                var ga = layout.GroupOf(a);
                for (var h = 0; h < groups; h++) lhs[ga, h] += c[a] * t[a * groups + h];
                rhs[ga] += c[a] * e.P[a * n + j];
            }
            if (e.Bias)
            {
                for (var h = 0; h < groups; h++) lhs[groups, h] = lhs[h, groups] = t[k * groups + h];
                lhs[groups, groups] = e.G[k * m + k];
                rhs[groups] = e.P[k * n + j];
            }
            var theta0 = new double[size];
            for (var g = 0; g < groups; g++) theta0[g] = scales[j * groups + g];
            if (e.Bias) theta0[groups] = bias![j];
            var damped = Damped(lhs, damp, out var lambda);
            var solution = Solve(damped, Matrix<double>.Build.Dense(size, 1, (a, _) => rhs[a] + lambda * theta0[a]));
            for (var g = 0; g < groups; g++)
            {
                // A scale f16 cannot hold (or zero, which the kernels read as 1) keeps its old value.
                var h = (Half)solution[g, 0];
                fresh[j * groups + g] = h == Half.Zero || !Half.IsFinite(h) ? (float)theta0[g] : (float)h;
            }
            if (e.Bias) freshBias![j] = (float)solution[groups, 0];
        });
        return (fresh, freshBias);
    }

    /// <summary>Scales (and bias) of a quantized layer as output j's parameters: each input's unit code times its group's scale.</summary>
    public static Expansion ScalesExpansion(float[] unit, QuantizedLayout layout) => (scales, bias) => j =>
    {
        var k = layout.Columns;
        var t = new double[k + (bias is null ? 0 : 1)];
        for (var a = 0; a < k; a++) t[a] = (double)unit[(long)j * k + a] * scales[j * layout.Groups + layout.GroupOf(a)];
        if (bias is not null) t[k] = bias[j];
        return t;
    };

    /// <summary>
    /// A low-rank pair X·A·B (+ bias) re-fitted as a whole: the best rank-r map from the student's inputs to the
    /// teacher's outputs (reduced-rank regression): with L·Lᵀ = ZᵀZ/T + λI over the centred inputs, the SVD of
    /// L⁻¹·(ZᵀY/T + λ·A·B) truncated to r and mapped back through L⁻ᵀ — SVD-LLM's whitening, aimed at the teacher
    /// rather than at the layer's own weight, pulled toward the pair as it is — then the bias from the means.
    /// <paramref name="a"/> is [in, r], <paramref name="b"/> [r, out]; the result holds the new A then the new B.
    /// </summary>
    public static (float[] Factors, float[]? Bias) SolveLowRank(RefitEquations e, float[] a, float[] b, int rank, double damp)
    {
        int k = e.Inputs, m = e.Size, n = e.Outputs;
        // Centred normal equations (G's bias row holds the input means, P's the output means): the bias is not ranked.
        var g = Matrix<double>.Build.Dense(k, k, (i, j) => e.G[i * m + j] - (e.Bias ? e.G[i * m + k] * e.G[j * m + k] : 0));
        var damped = Damped(g, damp, out var lambda);
        var w0 = LowRankProduct([.. a, .. b], k, rank, n);
        var p = Matrix<double>.Build.Dense(k, n, (i, j) => e.P[i * n + j] - (e.Bias ? e.G[i * m + k] * e.P[k * n + j] : 0) + lambda * w0[i * n + j]);
        Matrix<double> l;
        try
        {
            l = damped.Cholesky().Factor;
        }
        catch (ArgumentException)
        {
            // Not positive definite in floating point: this damp gives no candidate (the old pair stands in).
            return ([.. a, .. b], null);
        }
        // Lᵀ·W = L⁻¹·(P + λ·A·B): the truncation error of its SVD is the output error.
        var f = LowRankFactorization.Truncate(LowRankFactorization.SolveTriangular(l, p, transposed: false), rank, null, l, k, n);
        float[] factors = [.. f.A, .. f.B];
        return (factors, e.Bias ? Bias(e, factors, rank) : null);
    }

    /// <summary>
    /// A low-rank pair with its first factor kept: B = (AᵀGA + λI)⁻¹(AᵀP + λB₀) over the centred inputs, the bias from
    /// the means; the same factors layout as <see cref="SolveLowRank"/>.
    /// </summary>
    public static (float[] Factors, float[]? Bias) SolveSecondFactor(RefitEquations e, float[] a, float[] b, int rank, double damp)
    {
        int k = e.Inputs, m = e.Size, n = e.Outputs;
        var g = Matrix<double>.Build.Dense(k, k, (i, j) => e.G[i * m + j] - (e.Bias ? e.G[i * m + k] * e.G[j * m + k] : 0));
        var p = Matrix<double>.Build.Dense(k, n, (i, j) => e.P[i * n + j] - (e.Bias ? e.G[i * m + k] * e.P[k * n + j] : 0));
        var am = Matrix<double>.Build.Dense(k, rank, (i, r) => a[i * rank + r]);
        var lhs = Damped(am.TransposeThisAndMultiply(g) * am, damp, out var lambda);
        var rhs = am.TransposeThisAndMultiply(p) + Matrix<double>.Build.Dense(rank, n, (r, j) => lambda * b[r * n + j]);
        var fresh = Solve(lhs, rhs);
        var factors = new float[a.Length + b.Length];
        a.CopyTo(factors, 0);
        for (var r = 0; r < rank; r++)
            for (var j = 0; j < n; j++) factors[a.Length + r * n + j] = (float)fresh[r, j];
        return (factors, e.Bias ? Bias(e, factors, rank) : null);
    }

    /// <summary>The bias that centres a pair's outputs: ȳ − x̄·A·B.</summary>
    private static float[] Bias(RefitEquations e, float[] factors, int rank)
    {
        int k = e.Inputs, m = e.Size, n = e.Outputs;
        var w = LowRankProduct(factors, k, rank, n);
        var bias = new float[n];
        for (var j = 0; j < n; j++)
        {
            double s = e.P[k * n + j];
            for (var i = 0; i < k; i++) s -= e.G[i * m + k] * w[i * n + j];
            bias[j] = (float)s;
        }
        return bias;
    }

    /// <summary>A pair's factors (A then B, as <see cref="SolveLowRank"/> returns them) as output j's parameters: column j of A·B.</summary>
    public static Expansion LowRankExpansion(int inputs, int rank, int outputs) => (factors, bias) =>
    {
        var w = LowRankProduct(factors, inputs, rank, outputs);
        return j =>
        {
            var t = new double[inputs + (bias is null ? 0 : 1)];
            for (var i = 0; i < inputs; i++) t[i] = w[i * outputs + j];
            if (bias is not null) t[inputs] = bias[j];
            return t;
        };
    };

    /// <summary>A·B [inputs, outputs] from the factors A [inputs, rank] then B [rank, outputs] in one array.</summary>
    public static float[] LowRankProduct(float[] factors, int inputs, int rank, int outputs)
    {
        var w = new float[inputs * outputs];
        var bAt = inputs * rank;
        for (var i = 0; i < inputs; i++)
            for (var r = 0; r < rank; r++)
            {
                var air = factors[i * rank + r];
                for (var j = 0; j < outputs; j++) w[i * outputs + j] += air * factors[bAt + r * outputs + j];
            }
        return w;
    }

    /// <summary>‖Z·θ_j − y_j‖²/T of every output: θ_jᵀGθ_j − 2θ_jᵀP_j + ‖y_j‖²/T (a zero parameter, pruned, skips its row of G).</summary>
    private static double[] Errors(RefitEquations e, Func<int, double[]> theta)
    {
        int m = e.Size, n = e.Outputs;
        var errors = new double[n];
        Parallel.For(0, n, j =>
        {
            var th = theta(j);
            double s = e.YY[j];
            for (var a = 0; a < m; a++)
            {
                if (th[a] == 0) continue;
                s += th[a] * (Dot(e.G.AsSpan(a * m, m), th) - 2 * e.P[a * n + j]);
            }
            errors[j] = Math.Max(0, s);
        });
        return errors;
    }

    internal static double Dot(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        var lanes = System.Numerics.Vector<double>.Count;
        var acc = System.Numerics.Vector<double>.Zero;
        var i = 0;
        for (; i <= x.Length - lanes; i += lanes) acc += new System.Numerics.Vector<double>(x[i..]) * new System.Numerics.Vector<double>(y[i..]);
        var s = System.Numerics.Vector.Sum(acc);
        for (; i < x.Length; i++) s += x[i] * y[i];
        return s;
    }

    private static double Relative(RefitEquations e, double[] squared)
    {
        var total = e.Reference.Sum();
        return total > 0 ? Math.Sqrt(squared.Sum() / total) : 0;
    }

    /// <summary>M + λI with λ = <paramref name="damp"/> × M's mean diagonal (a tiny floor so a singular M still solves).</summary>
    private static Matrix<double> Damped(Matrix<double> m, double damp, out double lambda)
    {
        var mean = m.RowCount == 0 ? 0 : m.Diagonal().Average();
        lambda = Math.Max(damp, 1e-8) * Math.Max(mean, 1e-30);
        return m + Matrix<double>.Build.DenseIdentity(m.RowCount) * lambda;
    }

    private static Matrix<double> Solve(Matrix<double> lhs, Matrix<double> rhs)
    {
        try
        {
            return lhs.Cholesky().Solve(rhs);
        }
        catch (ArgumentException)
        {
            // Not positive definite in floating point (inputs that never fire): the least-squares solution.
            return lhs.Svd().Solve(rhs);
        }
    }
}
