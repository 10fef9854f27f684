using System.Text.Json;
using Kiln.Ir;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary><c>kiln eval</c>: its --json contract (docs/bench.md), and its inputs checked before any pass runs (KILN0021, exit 1).</summary>
public sealed class EvalCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-eval-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static string Stories => Fixtures.Model("stories260k");

    [Fact]
    public void Eval_json_keeps_its_fields_and_takes_calibration_with_any_pipeline()
    {
        var s = Stories;
        var r = CliRunner.Run("eval", Path.Combine(s, "model.onnx"), "--passes", "fold,dce,cse,fuse", "--tokens", Path.Combine(s, "eval_tokens.pb"),
            "--calibration", Path.Combine(s, "calib_tokens.pb"), "--json");
        Assert.True(r.ExitCode == 0, r.StdErr);
        using var doc = JsonDocument.Parse(r.StdOut);
        var root = doc.RootElement;
        foreach (var field in new[] { "kld_mean", "kld_p99", "top1", "ppl", "ppl_float", "bits_per_weight", "weight_bytes", "weight_bytes_float", "parameters", "tokens" })
            Assert.Equal(JsonValueKind.Number, root.GetProperty(field).ValueKind);
        Assert.Equal("fold,dce,cse,fuse", root.GetProperty("passes").GetString());
        Assert.Equal(0, root.GetProperty("kld_mean").GetDouble());
        // The float pipeline calibrates nothing: the data is accepted, and the unused option is said, not dropped silently.
        Assert.Contains("was not used", r.StdErr);
    }

    private string Tokens(long[,] ids)
    {
        var path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".pb");
        DataFile.WriteTensor(path, "tokens", TensorData.Int64([ids.GetLength(0), ids.GetLength(1)], ids.Cast<long>().ToArray()));
        return path;
    }

    [Theory]
    [InlineData("one token a row", "at least 2 tokens")]
    [InlineData("an id past the vocabulary", "outside the model's vocabulary of 512")]
    [InlineData("a negative id", "outside the model's vocabulary")]
    public void Eval_refuses_a_token_file_it_cannot_score_as_bad_input_before_any_pass(string what, string message)
    {
        var tokens = what switch
        {
            "one token a row" => Tokens(new long[,] { { 1 }, { 2 } }),
            "an id past the vocabulary" => Tokens(new long[,] { { 1, 2, 3, 512 } }),
            _ => Tokens(new long[,] { { 1, -2, 3 } }),
        };
        var r = CliRunner.Run("eval", Path.Combine(Stories, "model.onnx"), "--passes", "fold,dce,cse,fuse,quantize{bits=4}", "--tokens", tokens);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("KILN0021", r.StdErr);
        Assert.Contains(message, r.StdErr);
        Assert.DoesNotContain("quantize", r.StdErr); // refused before the passes ran
    }

    [Fact]
    public void Eval_refuses_a_model_without_next_token_logits()
    {
        var r = CliRunner.Run("eval", Fixtures.Model("paddleocr/cls/model.onnx"), "--passes", "fold", "--tokens", Path.Combine(Stories, "eval_tokens.pb"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("KILN0021", r.StdErr);
        Assert.Contains("not next-token logits", r.StdErr);
    }
}
