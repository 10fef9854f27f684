using System.Diagnostics;
using Kiln.Compiler;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.Runtime.Decoding;
using Kiln.Runtime.Kernels;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// Settings are per model, session and thread, never process globals: concurrent runs give the single-threaded
/// results bit for bit, one caller's thread count never changes another's, and concurrent parallel loops each run
/// in parallel.
/// </summary>
public sealed unsafe class ConcurrencyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-concurrency-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private CompiledRunner Compile(string model)
    {
        using var m = OnnxImporter.Import(Fixtures.Model(model));
        return CompiledRunner.CompileInMemory(m, model, new CompileOptions(), Path.Combine(_dir, Guid.NewGuid().ToString("N")));
    }

    private static float[] Logits(CompiledRunner r, IReadOnlyDictionary<string, object?> inputs) =>
        ((Tensor)r.Run(inputs).Values.First()!).Span<float>().ToArray();

    [Fact]
    [Trait("Kind", "consistency")]
    public void Eight_threads_on_one_instance_and_on_eight_instances_give_the_single_threaded_results_bit_for_bit()
    {
        // 128 tokens: the products and attention heads of this prompt split across the worker team.
        const string model = "stories260k/model-nocache.onnx";
        var inputs = new Dictionary<string, object?> { ["input_ids"] = Tensor.FromArray(DType.I64, [1, 128], Enumerable.Range(0, 128).Select(i => (long)(1 + i * 37 % 511)).ToArray()) };
        // Eight instances of one compiled class, each over its own blob.
        var first = Compile(model);
        var type = first.Model.GetType();
        var blob = first.Blob!.Source;
        var runners = new List<CompiledRunner> { first };
        runners.AddRange(Enumerable.Range(1, 7).Select(_ => CompiledRunner.Create(type.Assembly, type.FullName!, blob, model)));
        try
        {
            float[] expected;
            using (Parallelism.Use(1)) expected = Logits(runners[0], inputs);
            foreach (var shared in new[] { true, false })
            {
                var mismatches = 0;
                var threads = Enumerable.Range(0, 8).Select(t => new Thread(() =>
                {
                    var r = shared ? runners[0] : runners[t];
                    for (var i = 0; i < 200; i++)
                        if (!Logits(r, inputs).AsSpan().SequenceEqual(expected)) Interlocked.Increment(ref mismatches);
                })).ToList();
                threads.ForEach(t => t.Start());
                threads.ForEach(t => t.Join());
                Assert.True(mismatches == 0, $"{mismatches} of 1600 runs ({(shared ? "one instance" : "eight instances")}) differ from the single-threaded result");
            }
        }
        finally
        {
            runners.ForEach(r => r.Dispose());
        }
    }

    [Fact]
    [Trait("Kind", "consistency")]
    public void Two_sessions_with_different_thread_counts_do_not_change_each_other()
    {
        using var runner = Compile("stories260k/model.onnx");
        long[] prompt = [1, 403, 407, 261, 378, 99, 12, 500];
        float[] Solo(int threads)
        {
            using var s = new DecoderSession(runner.Model, runner.Model.DecoderLayout!, new DecoderOptions { Threads = threads, MaxContext = 64 });
            s.Prefill(prompt);
            return s.Decode(7).ToArray();
        }
        var expected = Solo(1);
        var stop = false;
        var other = new Thread(() =>
        {
            while (!Volatile.Read(ref stop)) Solo(2);
        });
        other.Start();
        try
        {
            using (Parallelism.Use(1))
                for (var i = 0; i < 100; i++)
                {
                    Assert.Equal(expected, Solo(1));
                    Assert.Equal(1, Parallelism.Threads); // the other thread's sessions never reach this thread's setting
                }
            Assert.Equal(Environment.ProcessorCount, Parallelism.Threads);
        }
        finally
        {
            Volatile.Write(ref stop, true);
            other.Join();
        }
    }

    [Fact]
    public void A_models_thread_count_applies_to_its_own_calls_and_a_callers_setting_wins()
    {
        Assert.Equal(Environment.ProcessorCount, Parallelism.Threads);
        using (Parallelism.UseUnlessSet(3)) Assert.Equal(3, Parallelism.Threads);
        using (Parallelism.Use(1))
        {
            using (Parallelism.UseUnlessSet(3)) Assert.Equal(1, Parallelism.Threads);
            var seen = 0;
            var t = new Thread(() => seen = Parallelism.Threads);
            t.Start();
            t.Join();
            Assert.Equal(Environment.ProcessorCount, seen); // per thread
        }
        Assert.Equal(Environment.ProcessorCount, Parallelism.Threads);
    }

    private struct Probe
    {
        public int* Ids;
    }

    private static void Record(void* state, int i)
    {
        ((Probe*)state)->Ids[i] = Environment.CurrentManagedThreadId;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalMilliseconds < 1) Thread.SpinWait(10);
    }

    [Fact]
    public void Parallel_loops_started_at_once_on_two_threads_both_run_in_parallel()
    {
        if (Environment.ProcessorCount < 2) return;
        var ids = new int[2][];
        using var start = new Barrier(2);
        var callers = Enumerable.Range(0, 2).Select(c => new Thread(() =>
        {
            var mine = ids[c] = new int[64];
            start.SignalAndWait();
            fixed (int* p = mine)
            {
                var probe = new Probe { Ids = p };
                WorkerTeam.For(64, 2, &Record, &probe, chunk: 1);
            }
        })).ToList();
        callers.ForEach(t => t.Start());
        callers.ForEach(t => t.Join());
        // Each loop had its caller and a worker of its own: neither ran alone while the other held the workers.
        Assert.All(ids, loop => Assert.True(loop.Distinct().Count() >= 2, $"a loop ran on threads {string.Join(", ", loop.Distinct())} only"));
        Assert.True(WorkerTeam.Teams >= 2);
    }
}
