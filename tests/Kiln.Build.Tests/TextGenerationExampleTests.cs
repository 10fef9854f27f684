using System.Text.Json;
using Kiln.Onnx;
using Kiln.TestSupport;
using Microsoft.ML.Tokenizers;

namespace Kiln.Build.Tests;

/// <summary>
/// The text-generation example: its sentencepiece BPE model loads in LlamaTokenizer and encodes as spm_encode did, and
/// the app, built from the repository with its two &lt;KilnModel&gt; items (f32, and 4-bit GPTQ calibrated on the
/// training verses), generates the evaluator's greedy tokens with each.
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
        var int4Blob = new FileInfo(Path.Combine(Example, "bin", "Debug", "net10.0", "KjvModelInt4.kiln"));
        Assert.InRange(int4Blob.Length, 1, new FileInfo(Path.Combine(Example, "bin", "Debug", "net10.0", "KjvModel.kiln")).Length / 5);

        using var tokenizerFile = File.OpenRead(Path.Combine(Example, "Models", "tokenizer.model"));
        var tokenizer = LlamaTokenizer.Create(tokenizerFile, addBeginOfSentence: true, addEndOfSentence: false);
        var prompt = tokenizer.EncodeToIds("And God said").Select(id => (long)id).ToArray();
        foreach (var (flag, passes) in new[] { ("f32", (string?)null), ("int4", "fold,dce,cse,fuse,quantize{bits=4 group=32 method=gptq}") })
        {
            (code, log) = DotnetProcess.Run($"{Path.Combine(Example, "bin", "Debug", "net10.0", "TextGeneration.dll")} \"And God said\" --greedy --tokens 40 --ids --model {flag}", Fixtures.RepoRoot);
            Assert.True(code == 0, log);
            var printed = log.Split('\n').Single(l => l.StartsWith("ids: ", StringComparison.Ordinal))[5..].Trim().Split(' ').Select(long.Parse).ToArray();
            // The same prompt through the reference evaluator (on the graph the same passes made), one token per call with the KV cache.
            using var model = OnnxImporter.Import(Path.Combine(Example, "Models", "kjv.onnx"));
            if (passes is not null)
            {
                var calibration = Path.Combine(Example, "train", "calibration-tokens.pb");
                Passes.PassManager.Run(model, Passes.PassPipeline.Parse(passes), calibration: new Passes.CalibrationSet(calibration, CalibrationFiles.Load(calibration, model.Graph)));
            }
            var expected = EvaluatorGreedy.Decode(model.Graph, prompt, printed.Length);
            Assert.Equal(40, printed.Length);
            Assert.Equal(expected, printed);
        }
    }

    private sealed record EncodedLine(string Text, int[] Ids);
}
