namespace Kiln.Passes;

/// <summary>
/// <c>prune{method=wanda}</c> (Sun et al., 2023, "pruning by weights and activations"): a weight's score is
/// |W_ij| · ‖X_j‖₂, its magnitude times the norm of its input over the calibration tokens, compared within each
/// output (and within each N:M group); kept weights are not updated.
/// </summary>
public sealed class WandaPruner : IWeightPruner
{
    public bool NeedsCalibration => true;

    public float[] Prune(float[] rows, int outputs, int inputs, SparsityPattern pattern, CalibrationWalk.LayerInputs? x)
    {
        var norms = InputNorms(x ?? throw new InvalidOperationException("wanda prunes calibrated layers only"));
        var score = new double[rows.Length];
        for (var r = 0; r < outputs; r++)
            for (var j = 0; j < inputs; j++) score[r * inputs + j] = Math.Abs(rows[r * inputs + j]) * norms[j];
        var w = (float[])rows.Clone();
        pattern.ZeroLowest(w, score, outputs, inputs);
        return w;
    }

    /// <summary>‖X_j‖₂ of every input column over the calibration tokens.</summary>
    public static double[] InputNorms(CalibrationWalk.LayerInputs x)
    {
        var sums = new double[x.Columns];
        for (var t = 0; t < x.Tokens; t++)
            for (var j = 0; j < x.Columns; j++)
            {
                double v = x.X[(long)t * x.Columns + j];
                sums[j] += v * v;
            }
        return sums.Select(Math.Sqrt).ToArray();
    }
}
