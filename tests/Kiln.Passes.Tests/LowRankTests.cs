using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Passes.Tests;

/// <summary><c>lowrank</c>'s math on small matrices: exact where the weight has the rank, and whitening's advantage where inputs are correlated.</summary>
public sealed class LowRankFactorizationTests
{
    private static float[] Gaussian(Random rng, int n)
    {
        var v = new float[n];
        for (var i = 0; i < n; i++) v[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }

    private static float[] Product(float[] a, float[] b, int m, int k, int n)
    {
        var c = new float[m * n];
        for (var i = 0; i < m; i++)
            for (var j = 0; j < n; j++)
            {
                double s = 0;
                for (var q = 0; q < k; q++) s += (double)a[i * k + q] * b[q * n + j];
                c[i * n + j] = (float)s;
            }
        return c;
    }

    [Theory]
    [InlineData("svd")]
    [InlineData("asvd")]
    [InlineData("svd-llm")]
    public void A_weight_of_rank_r_is_reproduced_at_rank_r(string method)
    {
        var rng = new Random(3);
        const int inputs = 24, outputs = 16, rank = 3, tokens = 200;
        var w = Product(Gaussian(rng, inputs * rank), Gaussian(rng, rank * outputs), inputs, rank, outputs);
        var x = new CalibrationWalk.LayerInputs(Gaussian(rng, tokens * inputs), tokens, inputs);
        var f = LowRankFactorization.Factor(method, w, inputs, outputs, rank, x);
        Assert.Equal((inputs * rank, rank * outputs), (f.A.Length, f.B.Length));
        Assert.True(LowRankFactorization.WeightError(w, f) < 1e-4, $"{method}: weight error {LowRankFactorization.WeightError(w, f)}");
    }

    [Fact]
    public void Whitening_lowers_the_output_error_where_inputs_are_correlated()
    {
        var rng = new Random(5);
        const int inputs = 32, outputs = 24, tokens = 400;
        // Inputs from 4 latent factors: most directions of W are never excited, and only SVD-LLM knows it.
        var z = Gaussian(rng, tokens * 4);
        var mix = Gaussian(rng, 4 * inputs);
        var xs = Product(z, mix, tokens, 4, inputs);
        for (var i = 0; i < xs.Length; i++) xs[i] += 0.01f * Gaussian(rng, 1)[0];
        var x = new CalibrationWalk.LayerInputs(xs, tokens, inputs);
        var w = Gaussian(rng, inputs * outputs);
        double Error(string m) => LowRankFactorization.OutputError(x, w, LowRankFactorization.Factor(m, w, inputs, outputs, 6, x));
        var (svd, llm) = (Error("svd"), Error("svd-llm"));
        Assert.True(llm < 0.2 * svd, $"SVD-LLM output error {llm} is not far below SVD's {svd}");
    }

    [Theory]
    [InlineData(0.8, 64, 172, 37)]
    [InlineData(0.6, 64, 64, 19)]
    [InlineData(0.8, 2, 2, 0)]
    [InlineData(1.0, 64, 64, 0)]
    public void The_rank_keeps_at_most_the_ratio_and_saves_something(double ratio, int inputs, int outputs, int rank) =>
        Assert.Equal(rank, LowRankFactorization.RankFor(ratio, inputs, outputs));
}

/// <summary>
/// What low-rank factorization does to the two small trained Llamas (the reduced sets of <see cref="PruningQualityTests"/>):
/// the published ordering — activation-aware whitening far below input scaling, scaling below plain SVD — at 80 % and
/// 60 % of the parameters kept.
/// </summary>
[Collection("quantization quality")]
public sealed class LowRankQualityTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("stories260k", 0.8)]
    [InlineData("stories260k", 0.6)]
    [InlineData("kjv", 0.8)]
    [InlineData("kjv", 0.6)]
    public void Svd_llm_beats_asvd_which_beats_svd(string subject, double ratio)
    {
        var quality = new PruningQualityTests(output);
        double Kld(string method) => quality.Kld(subject, FormattableString.Invariant($"lowrank{{method={method} ratio={ratio}}}"));
        var (svd, asvd, llm) = (Kld("svd"), Kld("asvd"), Kld("svd-llm"));
        Assert.True(asvd < svd, $"ASVD {asvd} is not below SVD's {svd}");
        Assert.True(llm < asvd, $"SVD-LLM {llm} is not below ASVD's {asvd}");
    }
}

/// <summary><c>lowrank</c> on stories260k: what the IR holds afterwards, and its refusals.</summary>
public sealed class LowRankPassTests
{
    [Fact]
    public void Every_product_but_the_classifier_becomes_two_smaller_ones()
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        PassManager.Run(model, PassPipeline.Parse(PassPipeline.Default));
        var before = PruneStructured.Parameters(model.Graph);
        var report = PassManager.Run(model, PassPipeline.Parse("lowrank{method=svd ratio=0.6}")).Single();
        // 35 products: per layer wq, wo [64, 64] → rank 19; wk, wv [64, 32] → rank 12; w1, w3 [64, 172], w2 [172, 64] → rank 27.
        Assert.Equal(35, report.Layers.Count);
        const long kept = 5 * (2 * 19 * 128 + 2 * 12 * 96 + 3 * 27 * 236), removed = 5 * (2 * 4096 + 2 * 2048 + 3 * 11008) - kept;
        Assert.Equal(removed, before - PruneStructured.Parameters(model.Graph));
        Assert.Equal(4 * kept, report.Layers.Sum(l => l.Bytes));
        // The report's rank and parameters-kept columns.
        Assert.Equal(kept, report.Layers.Sum(l => l.ParametersKept!.Value));
        Assert.Equal([12, 19, 27], report.Layers.Select(l => l.Rank!.Value).Distinct().Order());
        var factors = model.Graph.Constants.Where(c => c.Name.EndsWith(".A", StringComparison.Ordinal) || c.Name.EndsWith(".B", StringComparison.Ordinal)).ToList();
        Assert.Equal(70, factors.Count);
        Assert.All(factors, c => Assert.Equal("MatMul", c.Uses.Single().Node.QualifiedOp is "MatMul" or Runtime.Operators.KilnOp.Qualified.MatMulAdd ? "MatMul" : c.Uses.Single().Node.QualifiedOp));
        Assert.Contains(report.Notes, n => n.Contains("left alone (classifier)", StringComparison.Ordinal) || n.Contains("left alone (embedding)", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("method=svd-llm", "method=svd-llm needs calibration data")]
    [InlineData("method=pca", "option 'method' must be svd, asvd or svd-llm, not 'pca'")]
    [InlineData("method=svd rank=global", "option 'rank' must be uniform or auto, not 'global'")]
    public void Wrong_options_are_pipeline_errors(string options, string message)
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model-nocache.onnx"));
        var e = Assert.Throws<KilnException>(() => PassManager.Run(model, PassPipeline.Parse($"fold,dce,cse,fuse,lowrank{{{options}}}")));
        Assert.Equal(DiagnosticCode.InvalidPipeline, e.Diagnostics[0].Code);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }
}
