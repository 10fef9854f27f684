using Kiln.Compiler;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Passes.Tests;

/// <summary>
/// What each quantization method does to real models, measured as <c>kiln eval</c> measures it (KL divergence of the
/// compressed next-token distributions from the float ones, top-1 agreement), calibrating on other data than the
/// evaluation: stories260k on test_data_set_0's ids, evaluated on eval_tokens.pb; the text-generation example's
/// model on its training verses, evaluated on held-out verses.
/// </summary>
[Collection("quantization quality")]
public sealed class QuantizationQualityTests(ITestOutputHelper output)
{
    public sealed record Subject(string Model, string Tokens, string Calibration);

    private static readonly Dictionary<string, Subject> Subjects = new()
    {
        ["stories260k"] = new(Fixtures.Model("stories260k/model-nocache.onnx"), Fixtures.Model("stories260k/eval_tokens.pb"), Fixtures.Model("stories260k/test_data_set_0")),
        ["kjv"] = new(Path.Combine(Fixtures.RepoRoot, "examples/text-generation/Models/kjv.onnx"),
            Path.Combine(Fixtures.RepoRoot, "examples/text-generation/train/eval-tokens.pb"), Path.Combine(Fixtures.RepoRoot, "examples/text-generation/train/calibration-tokens.pb")),
    };

    // Each (model, pipeline) is evaluated once per test run: several tests compare against the same RTN result.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(string, string), Lazy<EvalResult>> Results = new();

    private EvalResult Eval(string subject, string pass)
    {
        var s = Subjects[subject];
        var r = Results.GetOrAdd((subject, pass), _ => new Lazy<EvalResult>(() => Compiler.Eval.Run(s.Model, "fold,dce,cse,fuse," + pass, s.Tokens, s.Calibration, null))).Value;
        output.WriteLine($"{subject} {pass}: ppl {r.PplFloat:0.####} → {r.Ppl:0.####}, KLD mean {r.KldMean:0.######} p99 {r.KldP99:0.######}, top-1 {r.Top1:P2}, {r.BitsPerWeight:0.##} bits/weight");
        return r;
    }

    [Theory]
    [InlineData("stories260k")]
    [InlineData("kjv")]
    public void Int8_everything_included_is_within_a_thousandth_of_a_nat_and_a_tenth_of_rtn4(string subject)
    {
        var int8 = Eval(subject, "quantize{bits=8}");
        var rtn4 = Eval(subject, "quantize{bits=4 group=32}");
        Assert.True(int8.KldMean <= 0.001, $"int8 mean KLD {int8.KldMean}");
        Assert.True(int8.KldMean <= rtn4.KldMean / 10, $"int8 mean KLD {int8.KldMean} vs RTN-4 g32 {rtn4.KldMean}");
        Assert.True(int8.Top1 >= 0.985, $"int8 top-1 agreement {int8.Top1}");
        Assert.InRange(int8.BitsPerWeight, 8, 9);
    }

    [Theory]
    [InlineData("stories260k", "gptq")]
    [InlineData("stories260k", "awq")]
    [InlineData("kjv", "gptq")]
    [InlineData("kjv", "awq")]
    public void Calibrated_methods_beat_round_to_nearest_at_the_same_group_size(string subject, string method)
    {
        var rtn = Eval(subject, "quantize{bits=4 group=32}");
        var calibrated = Eval(subject, $"quantize{{bits=4 group=32 method={method}}}");
        Assert.True(calibrated.KldMean < rtn.KldMean, $"{method} mean KLD {calibrated.KldMean} is not below RTN's {rtn.KldMean}");
        Assert.Equal(rtn.PplFloat, calibrated.PplFloat, 9);
    }

    [Theory]
    [InlineData("stories260k")]
    [InlineData("kjv")]
    public void Smoothquant_keeps_the_float_model_and_w8a8_stays_close(string subject)
    {
        var smoothed = Eval(subject, "smoothquant{alpha=0.5}");
        Assert.True(smoothed.KldMean < 1e-8, $"smoothing changed the float model: mean KLD {smoothed.KldMean}");
        var w8a8 = Eval(subject, "smoothquant{alpha=0.5},quantize{bits=8},quantize-activations{bits=8 mode=dynamic}");
        var rtn4 = Eval(subject, "quantize{bits=4 group=32}");
        Assert.True(w8a8.KldMean < 0.002 && w8a8.KldMean < rtn4.KldMean / 10, $"W8A8 mean KLD {w8a8.KldMean} (RTN-4 g32 {rtn4.KldMean})");
        // Static scales (one per 32-block from calibration) cost more than per-row ones, still far below RTN-4.
        var w8a8Static = Eval(subject, "smoothquant{alpha=0.5},quantize{bits=8},quantize-activations{bits=8 mode=static}");
        Assert.True(w8a8Static.KldMean > w8a8.KldMean && w8a8Static.KldMean < rtn4.KldMean / 10, $"static W8A8 mean KLD {w8a8Static.KldMean} (dynamic {w8a8.KldMean}, RTN-4 g32 {rtn4.KldMean})");
    }

    [Theory]
    [InlineData("stories260k")]
    [InlineData("kjv")]
    public void An_int8_kv_cache_costs_little_and_changes_no_weight(string subject)
    {
        var kv = Eval(subject, "quantize-kv{bits=8}");
        var rtn4 = Eval(subject, "quantize{bits=4 group=32}");
        Assert.True(kv.KldMean > 0, "the int8 KV cache changed nothing: is attention reading rounded keys?");
        Assert.True(kv.KldMean < 0.005 && kv.KldMean < rtn4.KldMean / 10 && kv.Top1 > 0.97, $"int8 KV mean KLD {kv.KldMean}, top-1 {kv.Top1} (RTN-4 g32 {rtn4.KldMean})");
        Assert.Equal(kv.WeightBytesFloat, kv.WeightBytes);
    }
}
