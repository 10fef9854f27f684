using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.Runtime.Compiled;
using Kiln.Runtime.Decoding;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>Compiled code honours a memory budget per model: runs, planned steps' arenas and sessions' KV caches are refused (KILN0022) before allocating.</summary>
public sealed class CompiledMemoryBudgetTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-budget-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Fill = """
        graph @fill(%shape: i64[3]) -> (%y: f32[?, ?, ?]) {
          %y: f32[?, ?, ?] = ConstantOfShape(%shape) {value=tensor f32[1] [1.0]} loc("fill")
        }
        """;

    private CompiledRunner Compile(string kir)
    {
        using var model = KirParser.ParseModel(kir);
        return CompiledRunner.CompileInMemory(model, "fill.kir", new CompileOptions { Passes = "dce" }, Path.Combine(_dir, Guid.NewGuid().ToString("N")));
    }

    private static KilnException Refusal(CompiledRunner runner, params long[] shape)
    {
        var before = GC.GetTotalAllocatedBytes(precise: true);
        var e = Assert.Throws<KilnException>(() => runner.Run(new Dictionary<string, object?> { ["shape"] = Tensor.Vector(shape) }));
        Assert.True(GC.GetTotalAllocatedBytes(precise: true) - before < 64L << 20, "refused only after allocating");
        Assert.Equal(DiagnosticCode.MemoryBudgetExceeded, e.Diagnostics[0].Code);
        return e;
    }

    [Fact]
    public void The_default_budget_refuses_an_11_GB_tensor()
    {
        using var runner = Compile(Fill);
        Assert.Equal(MemoryBudget.DefaultLimit, runner.Model.MemoryBudgetBytes);
        Assert.Contains("f32[2750, 1000, 1000]", Refusal(runner, 2750, 1000, 1000).Message);
    }

    [Fact]
    public void A_models_own_budget_refuses_a_1_6_GB_tensor_and_allows_a_small_one()
    {
        using var runner = Compile(Fill);
        runner.Model.MemoryBudgetBytes = 1L << 30;
        Assert.Contains("memory budget of 1.0 GiB", Refusal(runner, 400, 1000, 1000).Message);
        var y = (Tensor)runner.Run(new Dictionary<string, object?> { ["shape"] = Tensor.Vector(2, 3, 4) })["y"]!;
        Assert.Equal([2, 3, 4], y.Shape);
    }

    [Fact]
    public void A_session_whose_KV_cache_exceeds_the_budget_is_refused()
    {
        using var m = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        using var runner = CompiledRunner.CompileInMemory(m, "stories260k", new CompileOptions(), Path.Combine(_dir, "s"));
        runner.Model.MemoryBudgetBytes = 1L << 20; // 1 MiB: 5 layers × 2 × 4 heads × 8 × 4 bytes = 1,280 bytes a position
        var e = Assert.Throws<ModelRunException>(() => new DecoderSession(runner.Model, runner.Model.DecoderLayout!, new DecoderOptions { MaxContext = 1024 }));
        Assert.Equal("KILN0022", e.Code);
        using var fits = new DecoderSession(runner.Model, runner.Model.DecoderLayout!, new DecoderOptions { MaxContext = 512 });
        fits.Prefill([1, 2, 3]);
    }
}
