using Kiln.Compiler;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime;
using Kiln.Runtime.Compiled;
using Kiln.Runtime.Kernels;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// Bad input is what a check rejects on purpose (KILN0021/22/23); anything else thrown while running is a bug in
/// Kiln (KILN0099) with its cause kept, in compiled code, in the evaluator, on one thread or many.
/// </summary>
public sealed unsafe class FailureReportingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-failures-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Memory whose reading throws: a stand-in for a fault in Kiln's own code on the path that reads an input.</summary>
    private sealed class FaultyMemory(int length) : System.Buffers.MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => throw new InvalidOperationException("injected fault");

        public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => throw new InvalidOperationException("injected fault");

        public override void Unpin() { }

        public override Memory<byte> Memory => CreateMemory(length);

        protected override void Dispose(bool disposing) { }
    }

    private const string Graph = """
        graph @g(%x: f32[2, 4]) -> (%y: f32[2, 4]) {
          %y: f32[2, 4] = Relu(%x) loc("relu")
        }
        """;

    private static Tensor Faulty() => Tensor.Wrap(DType.F32, [2, 4], new FaultyMemory(32).Memory);

    [Fact]
    public void Compiled_code_reports_a_fault_as_a_bug_in_Kiln_with_its_cause()
    {
        using var model = KirParser.ParseModel(Graph);
        using var runner = CompiledRunner.CompileInMemory(model, "g.kir", new CompileOptions { Passes = "dce" }, _dir);
        var e = Assert.Throws<KilnInternalException>(() => runner.Run(new Dictionary<string, object?> { ["x"] = Faulty() }));
        Assert.StartsWith("KILN0099:", e.Message);
        Assert.Contains("bug in Kiln", e.Message);
        Assert.Equal("injected fault", Assert.IsType<InvalidOperationException>(e.InnerException).Message);
        // A check's refusal stays bad input.
        var bad = Assert.Throws<KilnException>(() => runner.Run(new Dictionary<string, object?> { ["x"] = Tensor.Zeros(DType.F32, [3, 4]) }));
        Assert.Equal(DiagnosticCode.InputMismatch, bad.Diagnostics[0].Code);
    }

    [Fact]
    public void The_evaluator_reports_a_fault_as_a_bug_in_Kiln_with_its_cause()
    {
        using var model = KirParser.ParseModel(Graph);
        var interpreter = new Interpreter(model.Graph, new EvaluatorOptions());
        var e = Assert.Throws<KilnException>(() => interpreter.Run(new Dictionary<string, object?> { ["x"] = Faulty() }));
        Assert.True(e.IsInternal);
        Assert.Equal("relu", e.Diagnostics[0].NodeName);
        Assert.Equal("injected fault", Assert.IsType<InvalidOperationException>(e.InnerException).Message);
    }

    private static void ThrowsBug(void* state, int i)
    {
        if (i == 37) throw new InvalidOperationException("bug at item 37");
    }

    private static void ThrowsCheck(void* state, int i)
    {
        if (i == 37) throw new KernelException("item 37 is out of range");
    }

    [Fact]
    public void A_parallel_loop_rethrows_what_its_body_threw_as_one_thread_would()
    {
        foreach (var threads in new[] { 1, 2, 4 })
        {
            var bug = Assert.Throws<InvalidOperationException>(() => WorkerTeam.For(64, threads, &ThrowsBug, null, chunk: 1));
            Assert.Equal("bug at item 37", bug.Message);
            Assert.Contains(nameof(ThrowsBug), bug.StackTrace); // the body's own frame, not only the loop's
            var check = Assert.Throws<KernelException>(() => WorkerTeam.For(64, threads, &ThrowsCheck, null, chunk: 1));
            Assert.Equal("item 37 is out of range", check.Message);
        }
    }
}
