using Kiln.CodeGen.Backends;
using Kiln.CodeGen.Planning;
using Kiln.Compiler;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Inference;
using Kiln.Passes;
using Kiln.Runtime;
using Kiln.Runtime.Weights;
using Xunit.Abstractions;

namespace Kiln.CodeGen.Tests.Grid;

/// <summary>
/// Every planned CPU kernel on the grid (<see cref="PlannedKernelGrid"/>): planned code, the operator entries (the
/// same class with every node a generic call) and the evaluator agree on every case. The grid must cover every op
/// that has a planned kernel, so a new kernel comes with its cases; a GPU backend will be gated by the same harness.
/// </summary>
public sealed class PlannedKernelGridTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-grid-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The CPU backend with no planned kernel: every node runs through its operator entry inside planned code.</summary>
    private sealed class OperatorEntriesBackend : ICodeBackend, IPlannedCodeBackend
    {
        private readonly CpuBackend _cpu = new();

        public string Name => "cpu";

        public string? Unsupported(Node node) => _cpu.Unsupported(node);

        public void EmitNode(NodeEmitContext context) => _cpu.EmitNode(context);

        public string? UnsupportedPlanned(PlannedNodeContext context) => "the grid's operator-entry engine";

        public void EmitPlanned(PlannedNodeContext context) => throw new InvalidOperationException("plans nothing");

        public bool IsFusableElementwise(Node node) => false;

        public void EmitElementwiseLoop(CodeWriter body, IReadOnlyList<ElementwiseStep> steps, PlannedOperand output) => throw new InvalidOperationException("fuses nothing");

        public bool ComputesLastRowsOnly(PlannedNodeContext context) => false;

        public PlannedOperand Bind(PlannedOperand value) => _cpu.Bind(value);

        public void EmitStorage(CodeWriter body, MemoryPlan plan) => _cpu.EmitStorage(body, plan);

        public void EmitKnown(CodeWriter body, PlannedOperand value, SymbolicTensor known, IReadOnlyDictionary<string, string> symbolLocals) =>
            _cpu.EmitKnown(body, value, known, symbolLocals);

        public void EmitAllocation(CodeWriter body, PlannedOperand value) => _cpu.EmitAllocation(body, value);

        public void EmitOutputCopy(CodeWriter body, int index, PlannedOperand value) => _cpu.EmitOutputCopy(body, index, value);

        public string EmitTensorOf(CodeWriter body, PlannedOperand value, string local) => _cpu.EmitTensorOf(body, value, local);
    }

    private static Model Parse(string text)
    {
        var model = KirParser.ParseModel(text);
        model.OpsetImports[""] = 21;
        return model;
    }

    [Fact]
    public void Every_planned_kernel_agrees_with_its_operator_entry_and_the_evaluator_on_the_grid()
    {
        var cases = PlannedKernelGrid.Cases();
        // Range runs planned only with a length from symbolic dims (positions: every decoder test); the grid's inputs are
        // concrete, where its constant inputs make it a value computed at compile time.
        var uncovered = CpuBackend.PlannedOps.Except(cases.Select(c => c.Op)).Except(["Range"]).ToList();
        Assert.True(uncovered.Count == 0, "ops with a planned kernel but no grid case: " + string.Join(", ", uncovered));

        var failures = new List<string>();
        foreach (var group in cases.Select((c, i) => (c, i)).GroupBy(x => x.c.Passes))
            failures.AddRange(Check([.. group.Select(x => x.c)], group.Key, [.. group.Select(x => x.i)]));
        output.WriteLine($"grid: {cases.Count} cases over {cases.Select(c => c.Op).Distinct().Count()} ops and {cases.Select(c => c.Types).SelectMany(t => t.Split(',')).Distinct().Count()} element types ({cases.Select(c => c.Types).Distinct().Count()} type combinations)");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>One graph of cases after <paramref name="passes"/>: planned code, operator entries and the evaluator; the failures (case numbers from <paramref name="numbers"/>).</summary>
    private List<string> Check(IReadOnlyList<GridCase> cases, string passes, IReadOnlyList<int> numbers)
    {
        var text = PlannedKernelGrid.Graph(cases);
        Model Prepared()
        {
            var model = Parse(text);
            // The cases' node types are '?': the passes read inferred types (quantize takes f32 products only).
            ShapeInference.Run(model.Graph);
            PassManager.Run(model, passes);
            return model;
        }
        using var plannedModel = Prepared();
        using var entriesModel = Prepared();
        using var reference = Prepared();
        var ops = reference.Graph.Nodes.Select(n => n.QualifiedOp).ToHashSet();
        foreach (var op in cases.Select(c => c.Op).Distinct()) Assert.True(ops.Contains(op), $"{passes} made no {op}");
        var dir = Path.Combine(_dir, $"g{numbers[0]}");
        using var planned = CompiledRunner.CompileInMemory(plannedModel, "grid.kir", new CompileOptions { Passes = "dce" }, Path.Combine(dir, "planned"), WeightLoading.Map, out var plannedResult);
        if (plannedResult.GenericCalls != 0)
        {
            // Name the cases: values are c{i}_…, nodes case{i}.
            var lines = plannedResult.Plan.Split('\n').Where(l => l.Contains("generic operator call:") || l.Length > 0 && !l.StartsWith(' '));
            Assert.Fail("grid cases without a planned kernel:\n" + string.Join("\n", lines.Select(l => System.Text.RegularExpressions.Regex.Replace(l, @"\bc(?:ase)?(\d+)_?",
                m => $"[case {numbers[int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)]}: {cases[int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)]}] "))));
        }
        using var entries = CompiledRunner.CompileInMemory(entriesModel, "grid.kir", new CompileOptions { Passes = "dce", Backend = new OperatorEntriesBackend() }, Path.Combine(dir, "entries"), WeightLoading.Map, out var entriesResult);
        // Views (Reshape, Flatten, Squeeze, Unsqueeze) are the same storage under other dims in either engine.
        Assert.Equal(reference.Graph.Nodes.Count(n => !n.Has(Kiln.Ir.Ops.OpTraits.View)), entriesResult.GenericCalls);

        var inputs = Inputs(reference.Graph, cases);
        var want = new Interpreter(reference.Graph).Run(inputs);
        var fromPlanned = planned.Run(inputs);
        var fromEntries = entries.Run(inputs);
        var failures = new List<string>();
        foreach (var o in reference.Graph.Outputs)
        {
            var i = int.Parse(o.Name[1..o.Name.IndexOf('_')], System.Globalization.CultureInfo.InvariantCulture);
            foreach (var (engine, got) in new[] { ("planned", fromPlanned), ("operator entry", fromEntries) })
                if (Differs((Tensor)want[o.Name]!, got[o.Name] as Tensor) is { } why)
                    failures.Add($"case {numbers[i]} {cases[i]} [{passes}] → {o.Name}, {engine}: {why}");
        }
        return failures;
    }

    /// <summary>Random inputs per case (seeded by the case index): f32 in [-2, 2] or (0.1, 2], integers in ±[1, 6], bools.</summary>
    private static Dictionary<string, object?> Inputs(Graph g, IReadOnlyList<GridCase> cases)
    {
        var inputs = new Dictionary<string, object?>();
        foreach (var v in g.Inputs)
        {
            var i = int.Parse(v.Name[1..v.Name.IndexOf('_')], System.Globalization.CultureInfo.InvariantCulture);
            var rng = new Random(1000 * i + v.Name.Length);
            var tt = v.TensorType!;
            var dims = tt.Shape!.Dims.Select(d => checked((int)d.Value!.Value)).ToArray();
            var n = dims.Aggregate(1, (a, b) => a * b);
            int Int() => (rng.Next(2) == 0 ? -1 : 1) * rng.Next(1, 7);
            inputs[v.Name] = tt.Elem switch
            {
                DType.F32 => Tensor.FromArray(DType.F32, dims, Enumerable.Range(0, n).Select(_ => cases[i].Positive ? (float)(0.1 + rng.NextDouble() * 1.9) : (float)(rng.NextDouble() * 4 - 2)).ToArray()),
                DType.I64 => Tensor.FromArray(DType.I64, dims, Enumerable.Range(0, n).Select(_ => (long)Int()).ToArray()),
                DType.I32 => Tensor.FromArray(DType.I32, dims, Enumerable.Range(0, n).Select(_ => Int()).ToArray()),
                DType.Bool => Tensor.FromArray(DType.Bool, dims, Enumerable.Range(0, n).Select(_ => (byte)rng.Next(2)).ToArray()),
                _ => throw new InvalidOperationException($"no grid inputs of {tt.Elem}"),
            };
        }
        return inputs;
    }

    /// <summary>Why <paramref name="got"/> is not <paramref name="want"/>: shape, element type, or a value beyond 1e-5 + 1e-4·|want|; null when equal.</summary>
    private static string? Differs(Tensor want, Tensor? got)
    {
        if (got is null) return "no tensor";
        if (got.Type != want.Type) return $"type {got.Type.Name()}, want {want.Type.Name()}";
        if (!got.Shape.SequenceEqual(want.Shape)) return $"shape [{string.Join(", ", got.Shape)}], want [{string.Join(", ", want.Shape)}]";
        for (var k = 0; k < want.Length; k++)
        {
            double a = got.GetDouble(k), b = want.GetDouble(k);
            if (double.IsNaN(a) && double.IsNaN(b) || a == b) continue;
            if (!(Math.Abs(a - b) <= 1e-5 + 1e-4 * Math.Abs(b))) return $"element {k}: {a}, want {b}";
        }
        return null;
    }
}
