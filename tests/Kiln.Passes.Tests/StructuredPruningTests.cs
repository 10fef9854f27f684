using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Passes.Tests;

/// <summary><c>prune-structured</c> on stories260k (8 query heads in 4 groups, 172 FFN channels, 5 layers): what the IR holds afterwards.</summary>
public sealed class StructuredPruningTests
{
    /// <summary>2 · the weight's elements of every product with a 2-D constant weight (the classifier's Gemm too).</summary>
    private static long ProductFlops(Graph g) =>
        g.Nodes.Where(n => n.QualifiedOp is "MatMul" or "Gemm" or Runtime.Operators.KilnOp.Qualified.MatMulAdd && n.Inputs[1] is { Kind: ValueKind.Constant, Data.Dims.Length: 2 })
            .Sum(n => 2L * n.Inputs[1]!.Data!.ElementCount);

    [Fact]
    public void The_pruned_ir_shrinks_by_the_reported_parameters_and_flops()
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        PassManager.Run(model, PassPipeline.Parse(PassPipeline.Default));
        var (parameters, flops) = (PruneStructured.Parameters(model.Graph), ProductFlops(model.Graph));
        Assert.Equal(2L * (5 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 172 * 3) + 64 * 512), flops);
        var report = PassManager.Run(model, PassPipeline.Parse("prune-structured{ffn=0.25 heads=0.25 method=magnitude bias=false}")).Single();
        // 43 of 172 channels (3 products of 64) and 1 of 4 groups (2 query heads: 16 query and output columns, 8 key and value) per layer.
        const int removed = 5 * (43 * 3 * 64 + (16 + 8 + 8 + 16) * 64);
        // The pass's line: "parameters A → B, product FLOPs per token C → D".
        var line = System.Text.RegularExpressions.Regex.Match(report.Notes.Single(n => n.StartsWith("parameters ", StringComparison.Ordinal)),
            @"^parameters ([\d,]+) → ([\d,]+), product FLOPs per token ([\d,]+) → ([\d,]+)");
        long Reported(int i) => long.Parse(line.Groups[i].Value, System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(line.Success);
        Assert.Equal((parameters, flops), (Reported(1), Reported(3)));
        Assert.Equal((PruneStructured.Parameters(model.Graph), ProductFlops(model.Graph)), (Reported(2), Reported(4)));
        Assert.Equal(removed, parameters - PruneStructured.Parameters(model.Graph));
        Assert.Equal(2L * removed, flops - ProductFlops(model.Graph));
        Assert.Equal(5 * 43, report.Counts["ffn channels removed"]);
        Assert.Equal(5, report.Counts["attention head groups removed"]);
        Assert.Equal(10, report.Layers.Count);
        Assert.Equal(4L * removed, report.Layers.Sum(l => l.FloatBytes - l.Bytes));
        // The decoder's cache and the attention take the new head counts.
        var g = model.Graph;
        foreach (var past in g.Inputs.Where(v => v.Name.StartsWith("past_key_values.", StringComparison.Ordinal)))
            Assert.Equal("f32[batch, 3, past_seq, 8]", past.Type.ToString());
        foreach (var present in g.Outputs.Where(o => o.Name.StartsWith("present.", StringComparison.Ordinal)))
            Assert.Equal(3, present.Value.TensorType!.Shape![1].Value);
        foreach (var attention in g.Nodes.Where(n => n.QualifiedOp == Runtime.Operators.KilnOp.Qualified.GroupQueryAttention))
            Assert.Equal(6, attention.Inputs[0]!.TensorType!.Shape![1].Value);
    }

    [Fact]
    public void Adaptive_allocation_keeps_the_budget_and_lets_layers_differ()
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model-nocache.onnx"));
        var calibration = CalibrationInputs.Load(Fixtures.Model("stories260k/test_data_set_0"), model.Graph);
        var reports = PassManager.Run(model, PassPipeline.Parse("fold,dce,cse,fuse,prune-structured{ffn=0.25 allocation=adaptive}"), calibration: calibration);
        var report = reports[^1];
        Assert.Equal(5 * 43, report.Counts["ffn channels removed"]);
        var kept = report.Layers.Select(l => int.Parse(l.Format.Split('/')[0], System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(5 * (172 - 43), kept.Sum());
        Assert.True(kept.Distinct().Count() > 1, $"every layer kept the same channels: {string.Join(", ", kept)}");
        Assert.All(kept, k => Assert.InRange(k, 1, 171));
        Assert.Contains(report.Notes, n => n.StartsWith("bias=auto: mean KLD on", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("method=obd", "option 'method' must be magnitude, wanda-sp or flap, not 'obd'")]
    [InlineData("allocation=global", "option 'allocation' must be uniform or adaptive, not 'global'")]
    [InlineData("bias=maybe method=magnitude", "option 'bias' must be auto, true or false, not 'maybe'")]
    [InlineData("bias=true method=magnitude", "bias=true needs calibration data")]
    [InlineData("ffn=1.5", "ffn")]
    public void Wrong_options_are_pipeline_errors(string options, string message)
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model-nocache.onnx"));
        var e = Assert.Throws<KilnException>(() => PassManager.Run(model, PassPipeline.Parse($"fold,dce,cse,fuse,prune-structured{{ffn=0.25 {options}}}".Replace("ffn=0.25 ffn=1.5", "ffn=1.5", StringComparison.Ordinal))));
        Assert.Equal(DiagnosticCode.InvalidPipeline, e.Diagnostics[0].Code);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Calibration_data_a_kernel_refuses_is_a_kiln_error_naming_the_node()
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model-nocache.onnx"));
        // Token 600 is past the 512-row embedding table.
        var data = new CalibrationSet("tokens.pb", [new Dictionary<string, TensorData> { ["input_ids"] = TensorData.Int64([1, 3], 1, 600, 2) }]);
        var e = Assert.Throws<KilnException>(() => PassManager.Run(model, PassPipeline.Parse("fold,dce,cse,fuse,prune-structured{ffn=0.25}"), calibration: data));
        Assert.Equal(DiagnosticCode.RuntimeError, e.Diagnostics[0].Code);
        Assert.Equal("Gather", e.Diagnostics[0].Op);
        Assert.Contains("calibration data tokens.pb", e.Message, StringComparison.Ordinal);
    }
}
