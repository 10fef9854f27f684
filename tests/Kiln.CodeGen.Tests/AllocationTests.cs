using Kiln.Cli;
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
        using var session = new DecoderSession(runner.Model, runner.Model.DecoderLayout!, new DecoderOptions { MaxContext = 512 });
        var next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(session.Prefill([1L, 2L, 3L]));
        for (var i = 0; i < 200; i++) next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(session.Decode(next));
        Thread.Sleep(500);
        var (total, mine, workers) = (GC.GetTotalAllocatedBytes(precise: true), GC.GetAllocatedBytesForCurrentThread(), Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes);
        for (var i = 0; i < 100; i++) next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(session.Decode(next));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - mine + Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes - workers;
        Assert.Equal(303, session.Position);
        Assert.True(allocated == 0, $"100 decode steps allocated {allocated} bytes on the decoding and worker threads ({GC.GetTotalAllocatedBytes(precise: true) - total} in the process)");
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
        var saved = Runtime.Kernels.MatMul.MaxThreads;
        Runtime.Kernels.MatMul.MaxThreads = 2; // 4 MB of B: split across the worker team
        try
        {
            for (var i = 0; i < 200; i++) Runtime.Kernels.MatMul.Gemm(x, k, false, weights, n, false, y, n, 1, n, k, false);
            Thread.Sleep(500);
            var (mine, workers) = (GC.GetAllocatedBytesForCurrentThread(), Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes);
            for (var i = 0; i < 100; i++) Runtime.Kernels.MatMul.Gemm(x, k, false, weights, n, false, y, n, 1, n, k, false);
            var allocated = GC.GetAllocatedBytesForCurrentThread() - mine + Runtime.Kernels.WorkerTeam.WorkerAllocatedBytes - workers;
            Assert.True(allocated == 0, $"100 products allocated {allocated} bytes on the calling and worker threads");
        }
        finally
        {
            Runtime.Kernels.MatMul.MaxThreads = saved;
        }
        for (var j = 0; j < n; j += 97)
        {
            double want = 0;
            for (var p = 0; p < k; p++) want += x[p] * weights[p * n + j];
            Assert.Equal(want, y[j], 2e-3);
        }
    }
}
