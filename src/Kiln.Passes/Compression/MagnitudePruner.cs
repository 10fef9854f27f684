namespace Kiln.Passes;

/// <summary>
/// <c>prune{method=magnitude}</c>: removes the weights of smallest magnitude |W|, compared within each output (and
/// within each N:M group). Needs no calibration data; the baseline the other methods are measured against.
/// </summary>
public sealed class MagnitudePruner : IWeightPruner
{
    public bool NeedsCalibration => false;

    public float[] Prune(float[] rows, int outputs, int inputs, SparsityPattern pattern, CalibrationWalk.LayerInputs? x)
    {
        var w = (float[])rows.Clone();
        pattern.ZeroLowest(w, rows.Select(v => (double)Math.Abs(v)).ToArray(), outputs, inputs);
        return w;
    }
}
