using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Runtime;

namespace Kiln.Passes;

/// <summary>
/// How far a rewritten model's outputs moved from the model's before: the mean KL divergence between the softmax
/// of the <c>logits</c> output (else the first), over its last axis, at every position of the given samples.
/// </summary>
public static class OutputDivergence
{
    /// <summary>The logits of every sample, as the model computes them now.</summary>
    internal static List<float[]> Logits(Graph g, CalibrationSet samples)
    {
        var name = LogitsOutput(g).Name;
        var run = new Interpreter(g, new EvaluatorOptions { CachePackedWeights = false });
        return Enumerable.Range(0, samples.Samples.Count)
            .Select(i => ((Tensor)run.Run(samples.Feeds(g, i).ToDictionary(f => f.Key.Name, f => f.Value))[name]!).Span<float>().ToArray())
            .ToList();
    }

    /// <summary>Mean KL(reference ‖ now) over every position.</summary>
    internal static double Measure(Graph g, CalibrationSet samples, IReadOnlyList<float[]> reference)
    {
        var now = Logits(g, samples);
        var vocab = (int)LogitsOutput(g).Value.TensorType!.Shape!.Dims[^1].Value!.Value;
        double sum = 0;
        long count = 0;
        var (p, q) = (new double[vocab], new double[vocab]);
        for (var s = 0; s < reference.Count; s++)
            for (var at = 0; at + vocab <= reference[s].Length; at += vocab)
            {
                LogSoftmax(reference[s].AsSpan(at, vocab), p);
                LogSoftmax(now[s].AsSpan(at, vocab), q);
                double kld = 0;
                for (var v = 0; v < vocab; v++) kld += Math.Exp(p[v]) * (p[v] - q[v]);
                sum += Math.Max(0, kld);
                count++;
            }
        return count == 0 ? 0 : sum / count;
    }

    private static GraphOutput LogitsOutput(Graph g) => g.Outputs.FirstOrDefault(o => o.Name == "logits") ?? g.Outputs[0];

    /// <summary>log softmax(x) in double precision (what <c>kiln eval</c> compares distributions with).</summary>
    public static void LogSoftmax(ReadOnlySpan<float> x, double[] y)
    {
        double max = double.NegativeInfinity;
        foreach (var v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in x) sum += Math.Exp(v - max);
        var log = Math.Log(sum) + max;
        for (var i = 0; i < x.Length; i++) y[i] = x[i] - log;
    }
}
