using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime.Operators;
using Kiln.Runtime.Weights;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Passes.Tests;

/// <summary>
/// <c>reconstruct</c>'s least squares on small synthetic layers, where the exact answer is known: the teacher's output is
/// reachable with the parameters the refit may move, so the error after is (close to) zero; what must stay (a mask,
/// the codes) stays.
/// </summary>
public sealed class LayerRefitTests
{
    private const int Tokens = 400;

    private static float[] Gaussian(Random rng, int n)
    {
        var v = new float[n];
        for (var i = 0; i < n; i++) v[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }

    private static CalibrationWalk.LayerInputs Inputs(float[] x, int columns) => new(x, x.Length / columns, columns);

    [Fact]
    public void A_pruned_layer_refits_its_kept_weights_to_the_teacher_and_keeps_its_zeros()
    {
        var rng = new Random(5);
        const int k = 12, n = 5;
        var x = Gaussian(rng, Tokens * k);
        var teacher = Gaussian(rng, n * k);
        // The teacher's outputs depend only on the student's kept inputs (every other weight zero in the teacher too,
        // but moved in the student): the refit can reach them exactly.
        var student = teacher.Select((w, i) => i % 2 == 0 ? 0f : w + 0.5f * Gaussian(rng, 1)[0]).ToArray();
        var target = teacher.Select((w, i) => i % 2 == 0 ? 0f : w).ToArray();
        var e = RefitEquations.Build(Inputs(x, k), false, Inputs(x, k), target, null, n);
        var (rows, _) = LayerRefit.SolveRows(e, student, null, 1e-9);
        for (var i = 0; i < rows.Length; i++)
            if (i % 2 == 0) Assert.Equal(0f, rows[i]);
            else Assert.Equal(target[i], rows[i], 3);
    }

    [Fact]
    public void A_quantized_layer_refits_its_scales_to_the_teacher_with_its_codes_fixed()
    {
        var rng = new Random(6);
        const int k = 64, n = 4;
        var x = Gaussian(rng, Tokens * k);
        var w = Gaussian(rng, n * k);
        var layout = QuantizedLayout.Create(4, n, k, 32, true);
        var packed = QuantizedWeights.Pack(w, layout);
        var unit = QuantizedWeights.Dequantize(layout, packed.Codes, Enumerable.Repeat(Half.One, n * layout.Groups).ToArray(), default);
        // The teacher is the quantized layer at known scales; the student has the same codes at wrong scales.
        var truth = Enumerable.Range(0, n * layout.Groups).Select(i => (float)(Half)(0.1 + 0.01 * i)).ToArray();
        var teacher = new float[n * k];
        for (var j = 0; j < n; j++)
            for (var a = 0; a < k; a++) teacher[j * k + a] = unit[j * k + a] * truth[j * layout.Groups + a / 32];
        var wrong = truth.Select(s => s * 1.5f).ToArray();
        var e = RefitEquations.Build(Inputs(x, k), false, Inputs(x, k), teacher, null, n);
        var (scales, _) = LayerRefit.SolveScales(e, unit, layout, wrong, null, 1e-9);
        for (var i = 0; i < truth.Length; i++) Assert.Equal(truth[i], scales[i], 3);
    }

    [Fact]
    public void A_low_rank_pair_refits_to_a_teacher_of_its_rank()
    {
        var rng = new Random(7);
        const int k = 16, n = 10, rank = 3;
        var x = Gaussian(rng, Tokens * k);
        var a0 = Gaussian(rng, k * rank);
        var b0 = Gaussian(rng, rank * n);
        var w = LayerRefit.LowRankProduct([.. a0, .. b0], k, rank, n);
        var teacherRows = new float[n * k];
        for (var i = 0; i < k; i++)
            for (var j = 0; j < n; j++) teacherRows[j * k + i] = w[i * n + j];
        var e = RefitEquations.Build(Inputs(x, k), false, Inputs(x, k), teacherRows, null, n);
        var (factors, _) = LayerRefit.SolveLowRank(e, Gaussian(rng, k * rank), Gaussian(rng, rank * n), rank, 1e-9);
        var fitted = LayerRefit.LowRankProduct(factors, k, rank, n);
        Assert.True(Quantize.RelativeError(w, fitted) < 1e-4, $"A·B is {Quantize.RelativeError(w, fitted)} from the teacher's");
    }

    [Fact]
    public void A_residual_product_also_takes_up_what_the_residual_lost()
    {
        var rng = new Random(8);
        const int k = 8, n = 6;
        var x = Gaussian(rng, Tokens * k);
        var w = Gaussian(rng, n * k);
        var lost = Gaussian(rng, n * k);
        // The student's residual misses X·Lᵀ, which its product can add: the refit weight is W + L.
        var gap = new float[Tokens * n];
        for (var t = 0; t < Tokens; t++)
            for (var j = 0; j < n; j++)
                for (var a = 0; a < k; a++) gap[t * n + j] += x[t * k + a] * lost[j * k + a];
        var e = RefitEquations.Build(Inputs(x, k), false, Inputs(x, k), w, null, n, gap);
        var (rows, _) = LayerRefit.SolveRows(e, w, null, 1e-9);
        for (var i = 0; i < rows.Length; i++) Assert.Equal(w[i] + lost[i], rows[i], 3);
    }

    [Fact]
    public void A_refit_the_held_out_tokens_do_not_support_is_refused()
    {
        var rng = new Random(9);
        const int k = 6, n = 3;
        // The student already is the teacher: nothing lowers the held-out error.
        var x = Gaussian(rng, Tokens * k);
        var w = Gaussian(rng, n * k);
        var (fit, held) = RefitEquations.BuildSplit(Inputs(x, k), false, Inputs(x, k), w, null, n);
        Assert.NotNull(held);
        var r = LayerRefit.Choose(fit, held, LayerRefit.Damps, w, null, [(e, d) => LayerRefit.SolveRows(e, w, null, d)], LayerRefit.RowsExpansion(k, n));
        Assert.NotNull(r.Refused);
        Assert.Same(w, r.Values);
    }
}

/// <summary><c>reconstruct</c> in a pipeline on stories260k: what it moves, what it keeps, its report, its refusals.</summary>
public sealed class ReconstructPassTests
{
    private static (Model Model, CalibrationSet Calibration) Stories()
    {
        var model = OnnxImporter.Import(Fixtures.Model("stories260k/model-nocache.onnx"));
        return (model, CalibrationInputs.Load(Fixtures.Model("stories260k/test_data_set_0"), model.Graph)!);
    }

    [Fact]
    public void Pruned_layers_keep_their_masks_and_lose_output_error()
    {
        var (model, calibration) = Stories();
        using var _ = model;
        var reports = PassManager.Run(model, PassPipeline.Parse("fold,dce,cse,fuse,prune{method=magnitude},reconstruct"), calibration: calibration);
        var zerosBefore = reports[^2].Layers.ToDictionary(l => l.Weight, l => l.Note!);
        var report = reports[^1];
        // 35 products: 5 layers × (wq, wk, wv, wo, w1, w3, w2); the classifier was left dense, so it is not refit.
        Assert.Equal(35, report.Layers.Count);
        Assert.All(report.Layers, l =>
        {
            Assert.NotNull(l.OutputErrorBefore);
            Assert.True(l.OutputError <= l.OutputErrorBefore, $"{l.Weight}: {l.OutputError} after, {l.OutputErrorBefore} before");
        });
        Assert.Contains(report.Layers, l => l.OutputError < 0.9 * l.OutputErrorBefore);
        // Masks fixed: every pruned product still has half of its weights zero.
        var products = model.Graph.Nodes.Where(n => n.QualifiedOp is "MatMul" or KilnOp.Qualified.MatMulAdd && n.Inputs[1] is { Kind: ValueKind.Constant }).ToList();
        var pruned = products.Select(n => n.Inputs[1]!.Data!.ToArray<float>()).Where(w => w.Count(v => v == 0) > 0).ToList();
        Assert.Equal(35, pruned.Count);
        Assert.All(pruned, w => Assert.Equal(0.5, (double)w.Count(v => v == 0) / w.Length, 2));
        Assert.Equal(35, zerosBefore.Count);
    }

    [Fact]
    public void The_compile_report_shows_each_layer_before_and_after()
    {
        var (model, calibration) = Stories();
        using var _ = model;
        var result = ModelCompiler.Compile(model, "stories260k.onnx", new CompileOptions
        {
            Passes = "fold,dce,cse,fuse,quantize{bits=4 group=128 method=rtn},reconstruct",
            Calibration = calibration,
            Verify = false,
        });
        var report = ModelCompiler.Report(result, 0);
        Assert.Contains("## Layers re-fitted by `reconstruct`", report, StringComparison.Ordinal);
        Assert.Contains("| weight | what was refit | bytes | output error before | output error after | parameter change | note |", report, StringComparison.Ordinal);
        Assert.Contains("| `model.layers.0.feed_forward.w2.weight` | int4 ", report, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("fold,dce,cse,fuse,reconstruct", true, "no compression pass (prune, prune-structured, lowrank, quantize, …) runs before it")]
    [InlineData("fold,dce,cse,fuse,quantize{bits=8},reconstruct", false, "needs calibration data")]
    [InlineData("fold,dce,cse,fuse,quantize{bits=8},reconstruct{damp=200}", true, "damp")]
    public void Wrong_use_is_a_pipeline_error(string pipeline, bool withCalibration, string message)
    {
        var (model, calibration) = Stories();
        using var _ = model;
        var e = Assert.Throws<KilnException>(() => PassManager.Run(model, PassPipeline.Parse(pipeline), calibration: withCalibration ? calibration : null));
        Assert.Equal(DiagnosticCode.InvalidPipeline, e.Diagnostics[0].Code);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }
}

/// <summary>
/// What reconstruction does to the two small trained Llamas (the reduced sets of <see cref="PruningQualityTests"/>):
/// it lowers the KLD of 4-bit round-to-nearest, of Wanda at half sparsity and of SVD-LLM at 80 % of the parameters.
/// The text-generation model's low-rank refit is judged with 4,096 calibration tokens (calibration-large-tokens.pb):
/// on the 1,024 of the other rows no low-rank refit lowers the error on the held-out tokens, and the factors stay.
/// </summary>
[Collection("quantization quality")]
public sealed class ReconstructQualityTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("stories260k", "quantize{bits=4 group=128 method=rtn}")]
    [InlineData("stories260k", "prune{method=wanda sparsity=0.5}")]
    [InlineData("stories260k", "lowrank{method=svd-llm ratio=0.8}")]
    [InlineData("kjv", "quantize{bits=4 group=128 method=rtn}")]
    [InlineData("kjv", "prune{method=wanda sparsity=0.5}")]
    [InlineData("kjv-large", "lowrank{method=svd-llm ratio=0.8}")]
    public void Reconstruction_lowers_the_kld(string subject, string compression)
    {
        var quality = new PruningQualityTests(output);
        var alone = quality.Kld(subject, compression);
        var reconstructed = quality.Kld(subject, compression + ",reconstruct");
        Assert.True(reconstructed < alone, $"{compression},reconstruct {reconstructed} is not below {compression}'s {alone}");
    }
}
