using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.Evaluator.Tests;

public sealed class RuntimeSafetyTests
{
    /// <summary>ConstantOfShape(shape) where the shape is a graph input: what ONNX Runtime fills memory with.</summary>
    private static Graph ConstantOfShapeGraph()
    {
        var g = new Graph("hostile");
        var shape = g.AddInput("shape", new TensorType(DType.I64, Shape.Of(3)));
        var node = g.AddNode("ConstantOfShape", "", "fill", [shape], ["y"],
            new Dictionary<string, AttrValue> { ["value"] = new TensorAttr(TensorData.FromArray(DType.F32, [1], new[] { 1f })) });
        g.AddOutput(node.Outputs[0]!, new TensorType(DType.F32, null));
        return g;
    }

    [Fact]
    public void A_tensor_larger_than_the_budget_is_refused_before_allocating()
    {
        var interpreter = new Interpreter(ConstantOfShapeGraph(), new EvaluatorOptions { MemoryBudget = 1L << 30 });
        var before = GC.GetTotalAllocatedBytes(true);
        var e = Assert.Throws<KilnException>(() => interpreter.Run(new Dictionary<string, object?> { ["shape"] = Tensor.Vector(3000, 1000, 1000) }));
        var allocated = GC.GetTotalAllocatedBytes(true) - before;
        var d = Assert.Single(e.Diagnostics);
        Assert.Equal(DiagnosticCode.MemoryBudgetExceeded, d.Code);
        Assert.Contains("f32[3000, 1000, 1000]", d.Message);
        Assert.Contains("memory budget of 1.0 GiB", d.Message);
        Assert.Equal("fill", d.NodeName);
        Assert.True(allocated < 64L << 20, $"{allocated} bytes were allocated");
    }

    [Fact]
    public void The_default_budget_refuses_an_11_GB_ConstantOfShape()
    {
        // The real default: a quarter of the memory, at most 8 GiB (on a 24 GB machine half would allow 11 GB).
        Assert.Equal(Math.Min(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4, 8L << 30), MemoryBudget.DefaultLimit);
        Assert.Equal(MemoryBudget.DefaultLimit, new EvaluatorOptions().MemoryBudget);
        var interpreter = new Interpreter(ConstantOfShapeGraph(), new EvaluatorOptions());
        var e = Assert.Throws<KilnException>(() => interpreter.Run(new Dictionary<string, object?> { ["shape"] = Tensor.Vector(2750, 1000, 1000) }));
        Assert.Equal(DiagnosticCode.MemoryBudgetExceeded, Assert.Single(e.Diagnostics).Code);
    }

    [Fact]
    public void Within_the_budget_the_same_graph_runs()
    {
        var interpreter = new Interpreter(ConstantOfShapeGraph(), new EvaluatorOptions { MemoryBudget = 1L << 20 });
        var y = (Tensor)interpreter.Run(new Dictionary<string, object?> { ["shape"] = Tensor.Vector(2, 3, 4) })["y"]!;
        Assert.Equal([2, 3, 4], y.Shape);
        Assert.All(y.Span<float>().ToArray(), v => Assert.Equal(1f, v));
    }

    private static Graph AddGraph()
    {
        var g = new Graph("add");
        var a = g.AddInput("a", new TensorType(DType.F32, new Shape([Dim.Symbol("n"), Dim.Const(4)])));
        var b = g.AddInput("b", new TensorType(DType.F32, new Shape([Dim.Symbol("n"), Dim.Const(4)])));
        var node = g.AddNode("Add", "", "sum", [a, b], ["c"]);
        node.Outputs[0]!.Type = new TensorType(DType.F32, new Shape([Dim.Symbol("n"), Dim.Const(4)]));
        g.AddOutput(node.Outputs[0]!);
        return g;
    }

    [Theory]
    [InlineData("missing", "input 'b' (f32[n, 4]) is missing")]
    [InlineData("type", "input 'b': expected element type f32, got i64")]
    [InlineData("rank", "input 'b': expected shape [n, 4] (rank 2), got [2] (rank 1)")]
    [InlineData("dim", "input 'b': expected shape [n, 4], got [2, 5] (dim 1 must be 4)")]
    [InlineData("symbol", "input 'b': dim 0 is 'n' = 3, but another input already set 'n' = 2")]
    [InlineData("unknown", "input 'z' is not an input of the graph")]
    public void Bad_inputs_are_refused_with_one_message_naming_the_input(string kind, string message)
    {
        var interpreter = new Interpreter(AddGraph());
        var inputs = new Dictionary<string, object?> { ["a"] = Tensor.Zeros(DType.F32, [2, 4]) };
        switch (kind)
        {
            case "type": inputs["b"] = Tensor.Zeros(DType.I64, [2, 4]); break;
            case "rank": inputs["b"] = Tensor.Zeros(DType.F32, [2]); break;
            case "dim": inputs["b"] = Tensor.Zeros(DType.F32, [2, 5]); break;
            case "symbol": inputs["b"] = Tensor.Zeros(DType.F32, [3, 4]); break;
            case "unknown": inputs["b"] = Tensor.Zeros(DType.F32, [2, 4]); inputs["z"] = Tensor.Zeros(DType.F32, [1]); break;
        }
        var e = Assert.Throws<KilnException>(() => interpreter.Run(inputs));
        var d = Assert.Single(e.Diagnostics);
        Assert.Equal(DiagnosticCode.InputMismatch, d.Code);
        Assert.Contains(message, d.Message);
    }

    [Fact]
    public void An_op_without_a_kernel_is_named_when_the_evaluator_is_created()
    {
        var g = new Graph("g");
        var x = g.AddInput("x", new TensorType(DType.F32, Shape.Of(1, 4, 1)));
        var n = g.AddNode("DFT", "", "spectrum", [x], ["y"]);
        g.AddOutput(n.Outputs[0]!, new TensorType(DType.F32, null));
        var e = Assert.Throws<KilnException>(() => new Interpreter(g, null, "model.onnx"));
        var d = Assert.Single(e.Diagnostics);
        Assert.Equal(DiagnosticCode.UnsupportedOp, d.Code);
        Assert.Contains("DFT: 1 node ('spectrum')", d.Message);
        Assert.Equal("model.onnx", d.File);
    }

    [Fact]
    public void Runtime_and_ir_element_type_enums_line_up()
    {
        foreach (var t in Enum.GetValues<DType>())
            Assert.Equal(t.Name(), t.ToRuntime().Name());
    }

    [Fact]
    public void Intermediates_are_freed_after_their_last_use()
    {
        // A chain of 20 adds on 1 MiB tensors: with freeing, peak stays at a few tensors, not 20.
        var g = new Graph("chain");
        var x = g.AddInput("x", new TensorType(DType.F32, Shape.Of(262144)));
        var cur = x;
        for (var i = 0; i < 20; i++)
        {
            var n = g.AddNode("Add", "", $"add{i}", [cur, x], [$"v{i}"]);
            n.Outputs[0]!.Type = x.Type;
            cur = n.Outputs[0]!;
        }
        g.AddOutput(cur);
        var interpreter = new Interpreter(g);
        interpreter.Run(new Dictionary<string, object?> { ["x"] = Tensor.Zeros(DType.F32, [262144]) });
        Assert.InRange(interpreter.PeakBytes, 1L << 20, 3L << 20);
    }
}
