using System.Text.Json;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.TestSupport;
using Microsoft.ML.Tokenizers;

namespace Kiln.Build.Tests;

/// <summary>
/// The text-generation example: its sentencepiece BPE model loads in LlamaTokenizer and encodes as spm_encode did, and
/// the app, built from the repository with its &lt;KilnModel&gt;, generates the evaluator's greedy tokens.
/// </summary>
[Collection("dotnet builds")]
public sealed class TextGenerationExampleTests
{
    private static string Example => Path.Combine(Fixtures.RepoRoot, "examples", "text-generation");

    [Fact]
    public void LlamaTokenizer_encodes_the_example_tokenizer_as_spm_encode_does()
    {
        using var model = File.OpenRead(Path.Combine(Example, "Models", "tokenizer.model"));
        var tokenizer = LlamaTokenizer.Create(model, addBeginOfSentence: false, addEndOfSentence: false);
        // Written by train/prepare.sh with Debian's spm_encode: held-out verses and a line of non-ASCII text.
        var cases = JsonSerializer.Deserialize<List<EncodedLine>>(File.ReadAllText(Path.Combine(Example, "train", "spm-encoded.json")),
            new JsonSerializerOptions { PropertyNameCaseInsensitive = true })!;
        Assert.True(cases.Count >= 40);
        foreach (var c in cases) Assert.Equal(c.Ids, tokenizer.EncodeToIds(c.Text));
    }

    [Fact]
    public void The_example_builds_from_the_repository_and_generates_the_evaluators_greedy_tokens()
    {
        var (code, log) = DotnetProcess.Run($"build {Example} -nodeReuse:false", Fixtures.RepoRoot);
        Assert.True(code == 0, log);
        Assert.True(File.Exists(Path.Combine(Example, "bin", "Debug", "net10.0", "KjvModel.kiln")));
        (code, log) = DotnetProcess.Run($"{Path.Combine(Example, "bin", "Debug", "net10.0", "TextGeneration.dll")} \"And God said\" --greedy --tokens 40 --ids", Fixtures.RepoRoot);
        Assert.True(code == 0, log);
        var printed = log.Split('\n').Single(l => l.StartsWith("ids: ", StringComparison.Ordinal))[5..].Trim().Split(' ').Select(long.Parse).ToArray();

        // The same prompt through the reference evaluator, one token per call with the KV cache.
        using var tokenizerFile = File.OpenRead(Path.Combine(Example, "Models", "tokenizer.model"));
        var tokenizer = LlamaTokenizer.Create(tokenizerFile, addBeginOfSentence: true, addEndOfSentence: false);
        using var model = OnnxImporter.Import(Path.Combine(Example, "Models", "kjv.onnx"));
        var evaluator = new Evaluator.Interpreter(model.Graph);
        var layers = model.Graph.Inputs.Count(i => i.Name.EndsWith(".key", StringComparison.Ordinal));
        var inputs = new Dictionary<string, object?>();
        for (var i = 0; i < layers; i++)
            foreach (var kv in new[] { "key", "value" }) inputs[$"past_key_values.{i}.{kv}"] = Tensor.Zeros(DType.F32, [1, 2, 0, 32]);
        var step = tokenizer.EncodeToIds("And God said").Select(id => (long)id).ToArray();
        var expected = new List<long>();
        while (expected.Count < printed.Length)
        {
            inputs["input_ids"] = Tensor.FromArray(DType.I64, [1, step.Length], step);
            var outputs = evaluator.Run(inputs);
            var logits = ((Tensor)outputs["logits"]!).Span<float>();
            var next = (long)System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits[^2048..]);
            expected.Add(next);
            for (var i = 0; i < layers; i++)
                foreach (var kv in new[] { "key", "value" }) inputs[$"past_key_values.{i}.{kv}"] = outputs[$"present.{i}.{kv}"];
            step = [next];
        }
        Assert.Equal(40, printed.Length);
        Assert.Equal(expected, printed);
    }

    private sealed record EncodedLine(string Text, int[] Ids);
}
