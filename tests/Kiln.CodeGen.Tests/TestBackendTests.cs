using Kiln.Compiler;
using Kiln.CodeGen.Backends;
using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Ir.Inference;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// A second backend written against the seam alone (ICodeBackend + IPlannedCodeBackend), without touching the
/// planner: it owns its storage (a heap array per value instead of the CPU backend's arena) and its planned kernels
/// are plain loops over the spans it bound. It compiles and runs, and its results are ONNX Runtime's.
/// </summary>
public sealed class TestBackendTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-test-backend-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Add, Mul and Relu on f32 spans of one shape, as for loops over arrays; anything else runs through the CPU backend's operator calls.</summary>
    private sealed class LoopBackend : ICodeBackend, IPlannedCodeBackend
    {
        private readonly CpuBackend _cpu = new();

        public string Name => "loops";

        public string? Unsupported(Node node) => _cpu.Unsupported(node);

        public void EmitNode(NodeEmitContext context) => _cpu.EmitNode(context);

        public string? UnsupportedPlanned(PlannedNodeContext c) =>
            c.Node.QualifiedOp is "Add" or "Mul" or "Relu" && c.Out(0) is { Elem: DType.F32 } y
                && Enumerable.Range(0, c.InputCount).All(i => c.In(i) is { Elem: DType.F32 } x && x.Dims.SequenceEqual(y.Dims))
                ? null : "the loop backend does f32 Add, Mul and Relu of one shape";

        public void EmitPlanned(PlannedNodeContext c)
        {
            var (x, y) = (c.In(0)!, c.Out(0)!);
            var value = c.Node.Op switch
            {
                "Add" => $"{x.Span}[i] + {c.In(1)!.Span}[i]",
                "Mul" => $"{x.Span}[i] * {c.In(1)!.Span}[i]",
                _ => $"MathF.Max({x.Span}[i], 0f)",
            };
            c.Body.Line($"// loop backend: {c.Node.QualifiedOp}");
            c.Body.Line($"for (var i = 0; i < {y.Span}.Length; i++) {y.Span}[i] = {value};");
        }

        public bool IsFusableElementwise(Node node) => false;

        public void EmitElementwiseLoop(CodeWriter body, IReadOnlyList<ElementwiseStep> steps, PlannedOperand output) =>
            throw new InvalidOperationException("the loop backend fuses nothing");

        public bool ComputesLastRowsOnly(PlannedNodeContext context) => false;

        public PlannedOperand Bind(PlannedOperand v) => v.Storage switch
        {
            PlannedStorage.Input => v with { Span = $"{v.Local}.Span<float>()" },
            PlannedStorage.Fallback => v with { Span = $"{v.Local}.Span<float>()" },
            PlannedStorage.Constant => v with { Span = $"{v.WeightField}.Span<float>()" },
            PlannedStorage.Output => v with { Span = $"o{v.OutputIndex}.Span<float>()" },
            _ => v with { Span = v.Local },
        };

        public void EmitStorage(CodeWriter body, MemoryPlan plan) =>
            body.Line($"// loop backend storage: one array per value ({plan.ArenaValues} arrays), no arena");

        public void EmitKnown(CodeWriter body, PlannedOperand value, SymbolicTensor known, IReadOnlyDictionary<string, string> symbolLocals) =>
            throw new InvalidOperationException("the test graph computes nothing from its dims");

        public void EmitAllocation(CodeWriter body, PlannedOperand v)
        {
            if (v.Storage == PlannedStorage.Arena) body.Line($"var {v.Span} = new float[{v.Count}];");
            else if (v.Storage == PlannedStorage.Output) body.Line($"var o{v.OutputIndex} = Tensor.Uninitialized(DType.F32, new int[] {{ {string.Join(", ", v.OutputDims)} }});");
        }

        public void EmitOutputCopy(CodeWriter body, int index, PlannedOperand v) =>
            body.Line($"var o{index} = Tensor.FromArray(DType.F32, new int[] {{ {string.Join(", ", v.Dims)} }}, {v.Span}.ToArray());");

        public string EmitTensorOf(CodeWriter body, PlannedOperand v, string local)
        {
            if (v.Storage is PlannedStorage.Input or PlannedStorage.Fallback) return v.Local;
            body.Line($"var {local} = Tensor.FromArray(DType.F32, new int[] {{ {string.Join(", ", v.Dims)} }}, (float[]){v.Span}.Clone());");
            return local;
        }
    }

    private const string Text = """
        graph @g(%x: f32[n, 4], %z: f32[n, 4]) -> (%y: f32[n, 4]) {
          %a: f32[n, 4] = Add(%x, %z)
          %s: f32[n, 4] = Sigmoid(%a)
          %m: f32[n, 4] = Mul(%s, %x)
          %y: f32[n, 4] = Relu(%m)
        }
        """;

    [Fact]
    public void A_backend_written_against_the_seam_compiles_plans_and_runs()
    {
        using var model = KirParser.ParseModel(Text);
        using var reference = KirParser.ParseModel(Text);
        reference.OpsetImports[""] = 21;
        using var runner = CompiledRunner.CompileInMemory(model, "loops.kir", new CompileOptions { Passes = "dce", Backend = new LoopBackend() }, _dir);
        var source = File.ReadAllText(Directory.GetFiles(_dir, "*.cs", SearchOption.AllDirectories).Single());
        Assert.Contains("// loop backend: Add", source);
        Assert.Contains("// loop backend: Relu", source);
        Assert.Contains("// loop backend storage: one array per value (2 arrays), no arena", source);
        // Sigmoid has no loop-backend kernel: one operator-entry call where it stands, the rest stays planned.
        Assert.Contains("(no planned kernel: its operator entry)", source);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(source, @"Generated\.Call\("));
        Assert.DoesNotContain("_arena.Slot", source);
        Assert.DoesNotContain("TensorPrimitives", source);
        var rng = new Random(11);
        var inputs = new Dictionary<string, object?>
        {
            ["x"] = Tensor.FromArray(DType.F32, [3, 4], Enumerable.Range(0, 12).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()),
            ["z"] = Tensor.FromArray(DType.F32, [3, 4], Enumerable.Range(0, 12).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()),
        };
        var want = OrtRunner.RunModel(reference, inputs)["y"];
        var got = ((Tensor)runner.Run(inputs)["y"]!).Span<float>().ToArray();
        Assert.Equal(want.Length, got.Length);
        for (var i = 0; i < got.Length; i++) Assert.Equal(want[i], got[i], 1e-6f);
    }
}
