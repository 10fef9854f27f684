using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.LinearAlgebra.Factorization;

namespace Kiln.Passes;

/// <summary>A weight W [in, out] as A [in, r] · B [r, out], and the singular values its method truncated (largest first).</summary>
public sealed record LowRankFactors(float[] A, float[] B, int Inputs, int Outputs, int Rank, double[] SingularValues);

/// <summary>
/// The three ways <c>lowrank</c> factors a weight W [in, out] of a product X·W:
/// <list type="bullet">
/// <item><c>svd</c>: truncated SVD of W (the best rank-r W in weight space, blind to the inputs);</item>
/// <item><c>asvd</c> (Yuan et al., 2023): W's input rows scaled by s_j = mean|X_j|^α before the SVD and unscaled after,
/// α searched in {0.25, 0.5, 0.75, 1} for the smallest output error;</item>
/// <item><c>svd-llm</c> (Wang et al., 2024): truncation-aware whitening — XᵀX = L·Lᵀ (Cholesky), SVD of Lᵀ·W, truncated,
/// mapped back through L⁻ᵀ, so each dropped singular value is exactly the output error it adds — then the second
/// factor refitted in closed form on the calibration activations (B = (AᵀGA)⁻¹AᵀGW, G = XᵀX undamped).</item>
/// </list>
/// Factors are balanced (each rank's column of A and row of B with equal norms) so both quantize alike.
/// </summary>
public static class LowRankFactorization
{
    /// <summary>The largest rank whose factors hold no more than <paramref name="ratio"/> of W's parameters (0 when none saves any).</summary>
    public static int RankFor(double ratio, int inputs, int outputs)
    {
        var r = (int)Math.Floor(ratio * inputs * outputs / (inputs + outputs));
        return (long)r * (inputs + outputs) < (long)inputs * outputs ? Math.Max(0, Math.Min(r, Math.Min(inputs, outputs))) : 0;
    }

    /// <param name="w">W [in, out], row-major</param>
    /// <param name="x">the calibration inputs (asvd, svd-llm); null for svd</param>
    /// <param name="rank">r, or 0 to only compute the singular values the method truncates</param>
    public static LowRankFactors Factor(string method, float[] w, int inputs, int outputs, int rank, CalibrationWalk.LayerInputs? x)
    {
        var m = Weight(w, inputs, outputs);
        switch (method)
        {
            case "svd":
                return Truncate(m, rank, null, null, inputs, outputs);
            case "asvd":
            {
                var sample = Sample(x!);
                var meanAbs = new double[inputs];
                for (var t = 0; t < sample.Tokens; t++)
                    for (var j = 0; j < inputs; j++) meanAbs[j] += Math.Abs(sample.X[(long)t * inputs + j]);
                LowRankFactors? best = null;
                var bestError = double.PositiveInfinity;
                // α = 0.5 (ASVD's usual choice) first: it alone gives the spectrum rank=auto allocates by.
                foreach (var alpha in new[] { 0.5, 0.25, 0.75, 1.0 })
                {
                    // A dead input (never active) keeps scale 1: dividing by zero would lose its row.
                    var s = meanAbs.Select(v => v > 0 ? Math.Pow(v / sample.Tokens, alpha) : 1.0).ToArray();
                    var scaled = Matrix<double>.Build.Dense(inputs, outputs, (i, j) => s[i] * m[i, j]);
                    var f = Truncate(scaled, rank, s, null, inputs, outputs);
                    if (rank == 0) return f;
                    var e = OutputError(sample, w, f);
                    if (e < bestError) (best, bestError) = (f, e);
                }
                return best!;
            }
            case "svd-llm":
            {
                var g = Gram(x!, inputs);
                var l = DampedCholesky(g);
                var f = Truncate(l.Transpose() * m, rank, null, l, inputs, outputs);
                if (rank == 0) return f;
                // B = (AᵀGA)⁻¹ AᵀG W: the second factor refitted to the activations (the undamped G, where whitening needed damping).
                var a = Matrix<double>.Build.Dense(inputs, rank, (i, k) => f.A[i * rank + k]);
                var ag = a.TransposeThisAndMultiply(g);
                var lhs = ag * a;
                var rhs = ag * m;
                Matrix<double> b;
                try
                {
                    b = lhs.Cholesky().Solve(rhs);
                }
                catch (ArgumentException)
                {
                    // AᵀGA singular (inputs that never fire): the least-squares solution through the SVD.
                    b = lhs.Svd().Solve(rhs);
                }
                return Balance(a, b, inputs, outputs, rank, f.SingularValues);
            }
            default:
                throw new ArgumentException($"unknown low-rank method '{method}'", nameof(method));
        }
    }

    /// <summary>
    /// SVD of <paramref name="m"/> (W itself, W with scaled rows, or Lᵀ·W), truncated to <paramref name="rank"/>, and the
    /// factors mapped back: rows unscaled by <paramref name="rowScale"/>, or A solved through Lᵀ.
    /// </summary>
    internal static LowRankFactors Truncate(Matrix<double> m, int rank, double[]? rowScale, Matrix<double>? l, int inputs, int outputs)
    {
        var (sigma, u, vt) = ThinSvd(m, rank);
        if (rank == 0) return new LowRankFactors([], [], inputs, outputs, 0, sigma);
        var b = Matrix<double>.Build.Dense(rank, outputs, (k, j) => sigma[k] * vt[k, j]);
        if (rowScale is not null) u = Matrix<double>.Build.Dense(inputs, rank, (i, k) => u[i, k] / rowScale[i]);
        if (l is not null) u = SolveTriangular(l, u, transposed: true);
        return Balance(u, b, inputs, outputs, rank, sigma);
    }

    /// <summary>
    /// The singular values of M [in, out] (largest first) and its first <paramref name="rank"/> singular vectors U_r
    /// [in, r], V_rᵀ [r, out], through the symmetric eigenproblem of the smaller Gram matrix (MᵀM or M·Mᵀ): a full SVD
    /// computes square U and V of the larger side, minutes per layer at 2048 × 768; this is O(min(in, out)³). The
    /// other side's vectors are M·v / σ (or uᵀ·M / σ), accurate for the singular values a truncation keeps.
    /// </summary>
    private static (double[] Sigma, Matrix<double> U, Matrix<double> Vt) ThinSvd(Matrix<double> m, int rank)
    {
        var wide = m.RowCount <= m.ColumnCount;
        var gram = wide ? m.TransposeAndMultiply(m) : m.TransposeThisAndMultiply(m);
        var evd = gram.Evd(Symmetricity.Symmetric);
        // Eigenvalues come in ascending order.
        var n = gram.RowCount;
        var order = Enumerable.Range(0, n).OrderByDescending(i => evd.EigenValues[i].Real).ToArray();
        var sigma = order.Select(i => Math.Sqrt(Math.Max(0, evd.EigenValues[i].Real))).ToArray();
        if (rank == 0) return (sigma, Matrix<double>.Build.Dense(0, 0), Matrix<double>.Build.Dense(0, 0));
        var vectors = Matrix<double>.Build.Dense(n, rank, (i, k) => evd.EigenVectors[i, order[k]]);
        // The vectors of the other side; a zero singular value gives a zero vector (its product is zero either way).
        var other = wide ? vectors.TransposeThisAndMultiply(m) : m * vectors;
        for (var k = 0; k < rank; k++)
        {
            var s = sigma[k] > 1e-12 * Math.Max(sigma[0], 1e-300) ? 1 / sigma[k] : 0;
            if (wide) other.SetRow(k, other.Row(k) * s);
            else other.SetColumn(k, other.Column(k) * s);
        }
        return wide ? (sigma, vectors, other) : (sigma, other, vectors.Transpose());
    }

    /// <summary>
    /// X with L·X = B (or Lᵀ·X = B), L lower triangular: substitution, O(k²·n). A general solve would factor L again
    /// (LU, O(k³)), the larger part of a refit's time at k = 512.
    /// </summary>
    internal static Matrix<double> SolveTriangular(Matrix<double> l, Matrix<double> b, bool transposed)
    {
        int k = l.RowCount, n = b.ColumnCount;
        var lower = l.ToArray();
        var x = new double[k * n];
        for (var i = 0; i < k; i++)
            for (var j = 0; j < n; j++) x[i * n + j] = b[i, j];
        var span = x.AsSpan();
        if (!transposed)
        {
            for (var i = 0; i < k; i++)
            {
                var row = span.Slice(i * n, n);
                for (var p = 0; p < i; p++)
                {
                    var f = lower[i, p];
                    if (f == 0) continue;
                    var src = span.Slice(p * n, n);
                    for (var j = 0; j < n; j++) row[j] -= f * src[j];
                }
                var d = 1 / lower[i, i];
                for (var j = 0; j < n; j++) row[j] *= d;
            }
        }
        else
        {
            // Lᵀ is upper triangular: back substitution, (Lᵀ)[i, p] = L[p, i].
            for (var i = k - 1; i >= 0; i--)
            {
                var row = span.Slice(i * n, n);
                for (var p = i + 1; p < k; p++)
                {
                    var f = lower[p, i];
                    if (f == 0) continue;
                    var src = span.Slice(p * n, n);
                    for (var j = 0; j < n; j++) row[j] -= f * src[j];
                }
                var d = 1 / lower[i, i];
                for (var j = 0; j < n; j++) row[j] *= d;
            }
        }
        return Matrix<double>.Build.Dense(k, n, (i, j) => x[i * n + j]);
    }

    /// <summary>Each rank k scaled so column k of A and row k of B have the same norm (the product unchanged).</summary>
    private static LowRankFactors Balance(Matrix<double> a, Matrix<double> b, int inputs, int outputs, int rank, double[] sigma)
    {
        var fa = new float[inputs * rank];
        var fb = new float[rank * outputs];
        for (var k = 0; k < rank; k++)
        {
            var na = a.Column(k).L2Norm();
            var nb = b.Row(k).L2Norm();
            var c = na > 0 && nb > 0 ? Math.Sqrt(nb / na) : 1;
            for (var i = 0; i < inputs; i++) fa[i * rank + k] = (float)(a[i, k] * c);
            for (var j = 0; j < outputs; j++) fb[k * outputs + j] = (float)(b[k, j] / c);
        }
        return new LowRankFactors(fa, fb, inputs, outputs, rank, sigma);
    }

    /// <summary>XᵀX over the calibration tokens (scaled by 2/T, as GPTQ's Hessian: the scale does not change the factors).</summary>
    private static Matrix<double> Gram(CalibrationWalk.LayerInputs x, int inputs)
    {
        var h = Gptq.Hessian(x.X, x.Tokens, inputs);
        return Matrix<double>.Build.Dense(inputs, inputs, (i, j) => h[i * inputs + j]);
    }

    /// <summary>L with L·Lᵀ = G + δI, δ growing from 1e-6 of the mean diagonal until G is positive definite (dead inputs make it singular).</summary>
    private static Matrix<double> DampedCholesky(Matrix<double> g)
    {
        var mean = Math.Max(g.Diagonal().Average(), 1e-30);
        for (var damp = 1e-6; ; damp *= 10)
        {
            var d = g + Matrix<double>.Build.DenseIdentity(g.RowCount) * (damp * mean);
            try
            {
                var c = d.Cholesky();
                if (c.Factor.Diagonal().All(v => v > 0 && double.IsFinite(v))) return c.Factor;
            }
            catch (ArgumentException) when (damp < 1)
            {
                // Not positive definite yet: more damping.
            }
        }
    }

    /// <summary>At most 512 tokens of the calibration inputs, for the error searches.</summary>
    private static CalibrationWalk.LayerInputs Sample(CalibrationWalk.LayerInputs x) =>
        x.Tokens <= 512 ? x : new CalibrationWalk.LayerInputs(x.X.AsSpan(0, 512 * x.Columns).ToArray(), 512, x.Columns);

    /// <summary>‖X·W − X·A·B‖ / ‖X·W‖ on (up to 512 of) the calibration tokens.</summary>
    public static double OutputError(CalibrationWalk.LayerInputs x, float[] w, LowRankFactors f)
    {
        var s = Sample(x);
        var xs = Matrix<double>.Build.Dense(s.Tokens, f.Inputs, (t, i) => s.X[(long)t * f.Inputs + i]);
        var exact = xs * Weight(w, f.Inputs, f.Outputs);
        var low = xs * Weight(f.A, f.Inputs, f.Rank) * Weight(f.B, f.Rank, f.Outputs);
        var den = exact.FrobeniusNorm();
        return den == 0 ? 0 : (exact - low).FrobeniusNorm() / den;
    }

    /// <summary>‖W − A·B‖ / ‖W‖.</summary>
    public static double WeightError(float[] w, LowRankFactors f)
    {
        var m = Weight(w, f.Inputs, f.Outputs);
        var den = m.FrobeniusNorm();
        return den == 0 ? 0 : (m - Weight(f.A, f.Inputs, f.Rank) * Weight(f.B, f.Rank, f.Outputs)).FrobeniusNorm() / den;
    }

    private static Matrix<double> Weight(float[] w, int rows, int columns) => Matrix<double>.Build.Dense(rows, columns, (i, j) => w[(long)i * columns + j]);

}
