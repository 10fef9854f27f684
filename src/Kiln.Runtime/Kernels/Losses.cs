namespace Kiln.Runtime.Kernels;

/// <summary>NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (computed in double).</summary>
public static class Losses
{
    /// <summary>input [N, C, d…] of log-probabilities, target [N, d…]; reduction none, sum or mean (weighted).</summary>
    public static Tensor Nll(Tensor input, Tensor target, Tensor? weight, string reduction, long? ignoreIndex)
    {
        var n = input.Shape[0];
        var c = input.Shape[1];
        var inner = (int)Tensor.Count(input.Shape[2..]);
        var x = input.ToDoubles();
        var t = target.ToLongs();
        var w = weight?.ToDoubles();
        var loss = new double[(long)n * inner];
        double wsum = 0;
        for (var b = 0; b < n; b++)
            for (var i = 0; i < inner; i++)
            {
                var k = t[(long)b * inner + i];
                if (ignoreIndex == k) continue;
                if (k < 0 || k >= c) throw new KernelException($"target class {k} is out of range for {c} classes");
                var wk = w?[k] ?? 1;
                loss[(long)b * inner + i] = -x[((long)b * c + k) * inner + i] * wk;
                wsum += wk;
            }
        return reduction switch
        {
            "none" => Movement.FromDoubles(input.Type, target.Shape, loss),
            "sum" => Movement.FromDoubles(input.Type, [], [loss.Sum()]),
            "mean" => Movement.FromDoubles(input.Type, [], [wsum == 0 ? 0 : loss.Sum() / wsum]),
            _ => throw new KernelException($"reduction '{reduction}' is not one of none, sum, mean"),
        };
    }

    public static (Tensor Loss, Tensor LogProb) SoftmaxCrossEntropy(Tensor scores, Tensor labels, Tensor? weight, string reduction, long? ignoreIndex)
    {
        var logProb = Normalization.Softmax(Cast.To(scores, DType.F64), 1, "LogSoftmax");
        var loss = Nll(logProb, labels, weight is null ? null : Cast.To(weight, DType.F64), reduction, ignoreIndex);
        return (Cast.To(loss, scores.Type), Cast.To(logProb, scores.Type));
    }
}
