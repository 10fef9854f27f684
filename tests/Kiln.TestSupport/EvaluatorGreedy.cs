using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Runtime;

namespace Kiln.TestSupport;

/// <summary>Greedy decoding by the reference evaluator, for tests that compare an engine's or an app's tokens with it.</summary>
public static class EvaluatorGreedy
{
    /// <summary>
    /// Runs a decoder with the <c>past_key_values.N.key/value</c> → <c>present.N.key/value</c> convention: the
    /// prompt in one call, then one token per call with the presents fed back; returns the <paramref name="count"/>
    /// arg-max tokens of the last positions. The pasts start empty, shaped from the declared past inputs.
    /// </summary>
    public static long[] Decode(Graph graph, IReadOnlyList<long> prompt, int count)
    {
        var evaluator = new Interpreter(graph);
        var inputs = new Dictionary<string, object?>();
        var pasts = graph.Inputs.Where(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal)).ToList();
        foreach (var past in pasts)
        {
            var dims = ((TensorType)past.Type).Shape!;
            inputs[past.Name] = Tensor.Zeros(DType.F32, [1, (int)dims[1].Value!.Value, 0, (int)dims[3].Value!.Value]);
        }
        var step = prompt.ToArray();
        var tokens = new List<long>();
        while (tokens.Count < count)
        {
            inputs["input_ids"] = Tensor.FromArray(DType.I64, [1, step.Length], step);
            var outputs = evaluator.Run(inputs);
            var logits = (Tensor)outputs["logits"]!;
            var next = (long)System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Span<float>()[^logits.Shape[^1]..]);
            tokens.Add(next);
            foreach (var past in pasts) inputs[past.Name] = outputs["present." + past.Name["past_key_values.".Length..]];
            step = [next];
        }
        return tokens.ToArray();
    }
}
