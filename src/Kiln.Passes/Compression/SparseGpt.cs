namespace Kiln.Passes;

/// <summary>
/// <c>prune{method=sparsegpt}</c> (Frantar &amp; Alistarh, 2023): GPTQ's column-by-column procedure with pruning in
/// place of rounding. Columns are taken in order; a pruned weight's error is spread over the columns not yet
/// visited through the upper Cholesky factor U of the damped inverse Hessian H = 2·XᵀX/T (lazy blocks of
/// <c>block</c> columns, as in <see cref="Gptq"/>), so the kept weights absorb what pruning removed. The mask is chosen
/// as it goes, by the OBS saliency w² / U_jj²: unstructured, the given share of each block (all rows together);
/// N:M, the M − N lowest of each group of M when the sweep reaches it, from the weights as updated so far.
/// </summary>
public sealed class SparseGptPruner(PassOptions options) : IWeightPruner
{
    private readonly double _damp = options.Int("damp", 1, 0, 100) / 100.0;
    private readonly int _block = (int)options.Int("block", 128, 1, 1 << 16);

    public bool NeedsCalibration => true;

    public float[] Prune(float[] rows, int outputs, int inputs, SparsityPattern pattern, CalibrationWalk.LayerInputs? x)
    {
        if (x is null) throw new InvalidOperationException("sparsegpt prunes calibrated layers only");
        if (!pattern.Unstructured && _block % pattern.Group != 0)
            throw new Kiln.Ir.Diagnostics.KilnException(new Kiln.Ir.Diagnostics.Diagnostic(Kiln.Ir.Diagnostics.DiagnosticCode.InvalidPipeline,
                $"pass 'prune': option 'block' ({_block}) must be a multiple of the pattern's group ({pattern.Group}), so no group straddles two blocks"));
        return Run(rows, outputs, inputs, pattern, x.X, x.Tokens, _damp, _block);
    }

    /// <summary>SparseGPT on W [n, k] with calibration inputs X [tokens, k].</summary>
    public static float[] Run(float[] rows, int n, int k, SparsityPattern pattern, float[] x, int tokens, double damp = 0.01, int block = 128)
    {
        var h = Gptq.Hessian(x, tokens, k);
        var w = rows.Select(v => (double)v).ToArray();
        Gptq.DropDeadInputs(h, w, n, k);
        var u = Gptq.DampedInverseCholeskyUpper(h, k, damp);
        var columns = Enumerable.Range(0, k).ToArray();
        var pruned = new bool[n * k];
        for (var b0 = 0; b0 < k; b0 += block)
        {
            var b1 = Math.Min(k, b0 + block);
            if (pattern.Unstructured) SelectInBlock(w, u, pruned, n, k, b0, b1, pattern.Sparsity);
            var err = new double[n * (b1 - b0)];
            for (var i = b0; i < b1; i++)
            {
                if (!pattern.Unstructured && i % pattern.Group == 0 && i + pattern.Group <= k) SelectInGroup(w, u, pruned, n, k, i, pattern);
                var d = u[i * k + i];
                Parallel.For(0, n, r =>
                {
                    var wv = w[r * k + i];
                    if (!pruned[r * k + i]) return;
                    w[r * k + i] = 0;
                    var e = wv / d;
                    err[r * (b1 - b0) + i - b0] = e;
                    for (var j = i + 1; j < b1; j++) w[r * k + j] -= e * u[i * k + j];
                });
            }
            Gptq.PropagateBlockError(w, err, u, n, k, b0, b1, columns);
        }
        return w.Select(v => (float)v).ToArray();
    }

    /// <summary>Marks the share <paramref name="sparsity"/> of the block's weights (all rows) with the lowest w² / U_jj².</summary>
    private static void SelectInBlock(double[] w, double[] u, bool[] pruned, int n, int k, int b0, int b1, double sparsity)
    {
        var width = b1 - b0;
        var keys = new double[n * width];
        var index = new int[n * width];
        for (var r = 0; r < n; r++)
            for (var j = 0; j < width; j++)
            {
                var d = u[(b0 + j) * k + b0 + j];
                var v = w[r * k + b0 + j];
                keys[r * width + j] = v * v / (d * d);
                index[r * width + j] = r * k + b0 + j;
            }
        Array.Sort(keys, index);
        var count = (int)Math.Round(sparsity * keys.Length);
        for (var t = 0; t < count; t++) pruned[index[t]] = true;
    }

    /// <summary>Marks, in every row, the M − N weights of the group starting at column <paramref name="i0"/> with the lowest w² / U_jj².</summary>
    private static void SelectInGroup(double[] w, double[] u, bool[] pruned, int n, int k, int i0, SparsityPattern pattern)
    {
        var keys = new double[pattern.Group];
        var index = new int[pattern.Group];
        for (var r = 0; r < n; r++)
        {
            for (var j = 0; j < pattern.Group; j++)
            {
                var d = u[(i0 + j) * k + i0 + j];
                var v = w[r * k + i0 + j];
                keys[j] = v * v / (d * d);
                index[j] = r * k + i0 + j;
            }
            Array.Sort(keys, index);
            for (var t = 0; t < pattern.PrunedPerGroup; t++) pruned[index[t]] = true;
        }
    }
}
