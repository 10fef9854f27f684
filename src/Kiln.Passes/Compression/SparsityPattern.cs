using Kiln.Ir.Diagnostics;

namespace Kiln.Passes;

/// <summary>
/// Which weights of a layer may become zero, over its rows (outputs × inputs): a fraction of every row
/// (<c>unstructured</c>), or <see cref="Keep"/> kept of every <see cref="Group"/> consecutive inputs (N:M, e.g. 2:4),
/// groups running along the reduction axis from its start. A row's last group, when shorter than M, stays dense.
/// </summary>
public sealed record SparsityPattern(double Sparsity, int Keep, int Group)
{
    public bool Unstructured => Group == 0;

    /// <summary>Weights pruned in each full group of an N:M pattern.</summary>
    public int PrunedPerGroup => Group - Keep;

    public string Name => Unstructured ? $"{Sparsity * 100:0.#}% unstructured" : $"{Keep}:{Group}";

    /// <summary>The pattern an option names: <c>unstructured</c> (with <paramref name="sparsity"/>) or <c>N:M</c>, 0 &lt; N &lt; M ≤ 64.</summary>
    public static SparsityPattern Parse(string pattern, double? sparsity)
    {
        if (pattern == "unstructured") return new SparsityPattern(sparsity ?? 0.5, 0, 0);
        var parts = pattern.Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[0], out var keep) || !int.TryParse(parts[1], out var group) || keep <= 0 || keep >= group || group > 64)
            throw Bad($"option 'pattern' must be unstructured or N:M with 0 < N < M ≤ 64 (2:4, 4:8), not '{pattern}'");
        if (sparsity is not null)
            throw Bad($"option 'sparsity' applies to pattern=unstructured; {pattern} keeps {keep} of every {group} weights");
        return new SparsityPattern(1 - (double)keep / group, keep, group);
    }

    /// <summary>Inputs per row left dense because they end in a partial N:M group (0 when unstructured).</summary>
    public int DenseTail(int columns) => Unstructured ? 0 : columns % Group;

    /// <summary>
    /// Zeroes the lowest-scoring weights of every row of <paramref name="w"/> [rows, columns]: the row's
    /// <see cref="Sparsity"/> share when unstructured, else the M − N lowest of each full group of M.
    /// </summary>
    public void ZeroLowest(float[] w, double[] score, int rows, int columns)
    {
        var prune = Unstructured ? (int)Math.Round(Sparsity * columns) : PrunedPerGroup;
        Parallel.For(0, rows, r =>
        {
            var order = new int[Unstructured ? columns : Group];
            var keys = new double[order.Length];
            for (var g0 = 0; g0 + order.Length <= columns; g0 += order.Length)
            {
                for (var j = 0; j < order.Length; j++)
                {
                    order[j] = g0 + j;
                    keys[j] = score[r * columns + g0 + j];
                }
                Array.Sort(keys, order);
                for (var j = 0; j < prune; j++) w[r * columns + order[j]] = 0;
            }
        });
    }

    private static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'prune': {what}"));
}

/// <summary>How a method prunes one layer's weight (rows = output channels, columns = inputs).</summary>
public interface IWeightPruner
{
    /// <summary>Whether the method needs the layer's input activations.</summary>
    bool NeedsCalibration { get; }

    /// <summary>The pruned rows: pruned weights exactly zero, the others possibly updated to make up for them.</summary>
    float[] Prune(float[] rows, int outputs, int inputs, SparsityPattern pattern, CalibrationWalk.LayerInputs? x);
}
