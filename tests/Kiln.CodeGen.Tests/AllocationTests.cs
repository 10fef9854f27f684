using Kiln.Compiler;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.Runtime.Decoding;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>Allocation counts are process-wide: these tests run alone, after the parallel ones.</summary>
[CollectionDefinition("allocation", DisableParallelization = true)]
public sealed class AllocationCollection;

/// <summary>
/// The planned decoding path allocates nothing per token, on the calling thread or on the kernels' worker threads
/// (counted per thread: the process-wide count also sees the test host's and the runtime's own threads, e.g.
/// finalizers of earlier tests' collectible assemblies). Warm-up runs long enough, with a pause, for tiered
/// compilation to finish rewriting the hot methods.
/// </summary>
[Collection("allocation")]
public sealed class AllocationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-alloc-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Decoding_stories260k_allocates_nothing_per_step_after_warm_up()
    {
        var path = Fixtures.Model("stories260k/model.onnx");
        using var m = OnnxImporter.Import(path);
        using var runner = CompiledRunner.CompileInMemory(m, path, new CompileOptions(), _dir);
        Assert.IsAssignableFrom<IPlannedDecoder>(runner.Model);
        using var session = new DecoderSession(runner.Model, runner.Model.DecoderLayout!, new DecoderOptions { MaxContext = 600 });
        long next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(session.Prefill([1L, 2L, 3L]));
        // The same method runs the warm-up and the measured steps, so the measured loop is jitted code that has
        // already been promoted, not a first-tier loop of the test method.
        for (var round = 0; round < 4; round++) next = DecodeSteps(session, next, 50);
        Thread.Sleep(500);
        // Three windows of 100 steps. An allocation in every step would cost at least 24 bytes × 100 in each window;
        // what the runtime itself does once in a while on this thread (seen: ~100 bytes once, in one window, at a
        // moment that moves with timing) cannot. So: every window under 1 KB, and at least one exactly zero.
        var windows = new List<(long Thread, long Workers, long Process)>();
        for (var window = 0; window < 3; window++)
        {
            var (total, mine, workers) = (GC.GetTotalAllocatedBytes(precise: true), GC.GetAllocatedBytesForCurrentThread(), Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes);
            next = DecodeSteps(session, next, 100);
            windows.Add((GC.GetAllocatedBytesForCurrentThread() - mine, Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes - workers, GC.GetTotalAllocatedBytes(precise: true) - total));
        }
        Assert.Equal(503, session.Position);
        var report = string.Join("; ", windows.Select(w => $"{w.Thread} bytes on the decoding thread, {w.Workers} on the workers ({w.Process} in the process)"));
        Assert.True(windows.Any(w => w.Thread + w.Workers == 0), $"no 100-step window was free of allocations: {report}");
        Assert.True(windows.All(w => w.Thread + w.Workers < 1024), $"decode steps allocate: {report}");
    }

    [Fact]
    public void A_planned_CNN_allocates_only_its_returned_output_per_call_after_warm_up()
    {
        // PaddleOCR's classifier: strided, depthwise and 1×1 convolutions with fused activations, squeeze-excite
        // blocks, pooling, a fully connected head. Every activation lives in the arena; the call returns one new
        // [2, 2] tensor (its object, its bytes and the result array: a few hundred bytes).
        var path = Fixtures.Model("paddleocr/cls/model.onnx");
        using var m = OnnxImporter.Import(path);
        using var runner = CompiledRunner.CompileInMemory(m, path, new CompileOptions(), _dir, Runtime.Weights.WeightLoading.Map, out var result);
        Assert.Equal(0, result.GenericCalls);
        var rng = new Random(3);
        var x = Tensor.FromArray(DType.F32, [2, 3, 48, 192], Enumerable.Range(0, 2 * 3 * 48 * 192).Select(_ => (float)rng.NextDouble()).ToArray());
        object?[] inputs = [x];
        for (var round = 0; round < 4; round++) RunCalls(runner.Model, inputs, 20);
        Thread.Sleep(500);
        var windows = new List<(long Thread, long Workers)>();
        for (var window = 0; window < 3; window++)
        {
            var (mine, workers) = (GC.GetAllocatedBytesForCurrentThread(), Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes);
            RunCalls(runner.Model, inputs, 20);
            windows.Add((GC.GetAllocatedBytesForCurrentThread() - mine, Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes - workers));
        }
        var report = string.Join("; ", windows.Select(w => $"{w.Thread} bytes on the calling thread, {w.Workers} on the workers"));
        // Per call: the input check's three small arrays, the output tensor with its shape and bytes, the result array
        // (432 bytes measured). One activation of the first block alone is 2·8·24·96 floats (147 KB); a closure or
        // enumerator per convolution (50 of them) would add 1.6 KB a call.
        Assert.True(windows.All(w => w.Thread + w.Workers < 20 * 512), $"20 calls of the planned CNN allocate: {report}");
        Assert.True(windows.Any(w => w.Workers == 0), $"the worker threads allocate: {report}");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void RunCalls(Runtime.Compiled.ICompiledModel model, object?[] inputs, int calls)
    {
        for (var i = 0; i < calls; i++) model.RunValues(inputs);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static long DecodeSteps(DecoderSession session, long next, int steps)
    {
        for (var i = 0; i < steps; i++) next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(session.Decode(next));
        return next;
    }

    [Fact]
    public void A_multi_threaded_matrix_vector_product_allocates_nothing()
    {
        const int k = 1024, n = 1024;
        var weights = new float[k * n];
        var rng = new Random(7);
        for (var i = 0; i < weights.Length; i++) weights[i] = (float)rng.NextDouble() - 0.5f;
        var x = new float[k];
        for (var i = 0; i < k; i++) x[i] = (float)rng.NextDouble();
        var y = new float[n];
        using (Runtime.Kernels.Parallelism.Use(2)) // 4 MB of B: split across the worker team
        {
            for (var i = 0; i < 200; i++) Runtime.Kernels.MatMul.Gemm(x, k, false, weights, n, false, y, n, 1, n, k, false);
            Thread.Sleep(500);
            // As for decoding: three windows, one of them exactly zero and none near one allocation per call.
            var windows = new List<long>();
            for (var window = 0; window < 3; window++)
            {
                var (mine, workers) = (GC.GetAllocatedBytesForCurrentThread(), Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes);
                for (var i = 0; i < 100; i++) Runtime.Kernels.MatMul.Gemm(x, k, false, weights, n, false, y, n, 1, n, k, false);
                windows.Add(GC.GetAllocatedBytesForCurrentThread() - mine + Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes - workers);
            }
            Assert.True(windows.Contains(0) && windows.All(b => b < 1024), $"100 products allocated {string.Join(", ", windows)} bytes on the calling and worker threads");
        }
        for (var j = 0; j < n; j += 97)
        {
            double want = 0;
            for (var p = 0; p < k; p++) want += x[p] * weights[p * n + j];
            Assert.Equal(want, y[j], 2e-3);
        }
    }
}
