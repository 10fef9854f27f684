using Kiln.Compiler;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.Evaluator.Tests;

/// <summary>The evaluator on the real models in ../shared/models, against their reference outputs.</summary>
public sealed class SharedModelTests
{
    [Theory]
    [MemberData(nameof(Fixtures.SharedDataSetRows), MemberType = typeof(Fixtures))]
    public void Evaluator_reproduces_the_reference_outputs(string model, string dataSet, double atol, double rtol)
    {
        using var m = OnnxImporter.Import(Fixtures.Model(model));
        var interpreter = new Interpreter(m.Graph);
        var checks = DataSets.Check(interpreter, m.Graph, Fixtures.Model(dataSet), atol, rtol);
        Assert.NotEmpty(checks);
        Assert.All(checks, c => Assert.True(c.Ok, $"{c.Name}: {c.Problem} (max abs {c.MaxAbs})"));
        Assert.True(interpreter.PeakBytes > 0);
    }

    [Fact]
    public void Every_data_set_in_the_shared_models_is_covered()
    {
        var sets = Directory.EnumerateDirectories(Fixtures.SharedModels, "*test_data_set_*", SearchOption.AllDirectories)
            .Select(d => Path.GetRelativePath(Fixtures.SharedModels, d).Replace('\\', '/')).Order().ToList();
        var covered = Fixtures.SharedDataSets.Select(d => d.DataSet).Order().ToList();
        Assert.Equal(sets, covered);
    }

    private static long[] ExpectedGreedy() =>
        File.ReadAllLines(Fixtures.Model("stories260k/greedy_200.txt")).First(l => l.Length > 0 && !l.StartsWith('#'))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    private static long ArgMaxLast(Tensor logits)
    {
        var vocab = logits.Shape[^1];
        var row = logits.Span<float>()[^vocab..];
        return System.Numerics.Tensors.TensorPrimitives.IndexOfMax(row);
    }

    [Fact]
    public void Stories260k_greedy_decoding_with_the_kv_cache_matches_the_no_cache_model_and_llama2c()
    {
        var expected = ExpectedGreedy();
        Assert.Equal(200, expected.Length);

        using var cached = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        // BOS: prefill is the single BOS token, then one token per call.
        var withCache = EvaluatorGreedy.Decode(cached.Graph, [1L], 200);

        using var plain = OnnxImporter.Import(Fixtures.Model("stories260k/model-nocache.onnx"));
        var full = new Interpreter(plain.Graph);
        var sequence = new List<long> { 1 };
        var noCache = new List<long>();
        for (var step = 0; step < 200; step++)
        {
            var outs = full.Run(new Dictionary<string, object?> { ["input_ids"] = Tensor.FromArray(DType.I64, [1, sequence.Count], sequence.ToArray()) });
            var next = ArgMaxLast((Tensor)outs["logits"]!);
            noCache.Add(next);
            sequence.Add(next);
        }

        Assert.Equal(expected, withCache);
        Assert.Equal(expected, noCache.ToArray());
    }
}
