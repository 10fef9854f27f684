using Kiln.Ir.Diagnostics;

namespace Kiln.Passes.Tests;

public sealed class PipelineTests
{
    [Fact]
    public void Parses_names_options_lists_and_globs()
    {
        var p = PassPipeline.Parse(" fold , quantize{bits=4 group=32 skip=[lm_head*, *.embed?]} ,dce{} ");
        Assert.Equal(["fold", "quantize", "dce"], p.Steps.Select(s => s.Name));
        var q = p.Steps[1].Options;
        Assert.Equal(4, q.Int("bits", 8));
        Assert.Equal(32, q.Int("group", 0));
        Assert.Equal(["lm_head*", "*.embed?"], q.List("skip")!);
        Assert.Equal("fold,quantize{bits=4 group=32 skip=[lm_head*, *.embed?]},dce", p.ToString());
    }

    [Fact]
    public void Empty_text_is_an_empty_pipeline() => Assert.Empty(PassPipeline.Parse("  ").Steps);

    [Theory]
    [InlineData("fold,", "expected a pass name but the text ended")]
    [InlineData("fold{skip=[a, b}", "expected ','")]
    [InlineData("fold{max-growth=1 max-growth=2}", "option 'max-growth' of 'fold' is given twice")]
    [InlineData("fold dce", "expected ','")]
    public void Syntax_errors_say_what_and_where(string text, string message)
    {
        var e = Assert.Throws<KilnException>(() => PassPipeline.Parse(text));
        Assert.Equal(DiagnosticCode.InvalidPipeline, e.Diagnostics[0].Code);
        Assert.Contains(message, e.Message);
        Assert.Contains("column", e.Message);
    }

    [Fact]
    public void Option_values_are_checked()
    {
        var e = Assert.Throws<KilnException>(() => PassPipeline.Parse("fold{max-growth=lots}").Steps[0].Options.Int("max-growth", 0));
        Assert.Contains("must be an integer, not 'lots'", e.Message);
    }

    [Theory]
    [InlineData("*", "anything", true)]
    [InlineData("lm_head*", "lm_head.weight", true)]
    [InlineData("*.attn.*", "layers.3.attn.q_proj", true)]
    [InlineData("layer?.mlp", "layer7.mlp", true)]
    [InlineData("layer?.mlp", "layer12.mlp", false)]
    [InlineData("embed", "embed_tokens", false)]
    public void Globs_match_whole_names(string pattern, string text, bool matches) => Assert.Equal(matches, Glob.Matches(pattern, text));

    [Fact]
    public void Every_registered_pass_is_documented()
    {
        var doc = File.ReadAllText(Path.Combine(TestSupport.Fixtures.RepoRoot, "docs", "pipelines.md"));
        foreach (var pass in PassRegistry.All)
        {
            Assert.Contains($"`{pass.Name}`", doc);
            foreach (var option in pass.OptionNames) Assert.Contains($"`{option}`", doc);
        }
    }

    [Theory]
    [InlineData("quantize{bits=8},quantize-activations{bits=8 mode=static}", "mode=static needs calibration data")]
    [InlineData("quantize{bits=8},quantize-activations{bits=8 mode=sometimes}", "mode=sometimes is not a mode")]
    [InlineData("quantize-kv{bits=8}", "no kiln:GroupQueryAttention in the graph: run fuse before it")]
    // Every wrong bit width gets the same message, in range or not, a number or not.
    [InlineData("quantize{bits=2}", "option 'bits' must be 4 or 8, not '2'")]
    [InlineData("quantize{bits=5}", "option 'bits' must be 4 or 8, not '5'")]
    [InlineData("quantize{bits=16}", "option 'bits' must be 4 or 8, not '16'")]
    [InlineData("quantize{bits=four}", "option 'bits' must be 4 or 8, not 'four'")]
    [InlineData("quantize{bits=8},quantize-activations{bits=4}", "option 'bits' must be 8, not '4'")]
    [InlineData("quantize-kv{bits=4}", "option 'bits' must be 8, not '4'")]
    [InlineData("quantize{bits=8},sparse-weights{quantized=maybe}", "option 'quantized' must be dense or sparse, not 'maybe'")]
    public void Compression_passes_say_what_they_are_missing(string pipeline, string message)
    {
        const string text = """
            graph @g(%x: f32[n, 2]) -> (%y: f32[n, 3]) {
              const @w: f32[2, 3] = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0]
              %y: f32[n, 3] = MatMul(%x, @w)
            }
            """;
        using var model = Kiln.Ir.KirParser.ParseModel(text, null, "test.kir");
        var e = Assert.Throws<KilnException>(() => { PassManager.Run(model, pipeline); });
        Assert.Equal(DiagnosticCode.InvalidPipeline, e.Diagnostics[0].Code);
        Assert.Contains(message, e.Message);
    }
}
