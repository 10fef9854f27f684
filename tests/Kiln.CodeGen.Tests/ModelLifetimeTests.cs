using Kiln.Compiler;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.Runtime.Weights;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>A compiled model's weights are never read after they are freed: a disposed model or blob refuses calls, and Dispose waits for a running one.</summary>
public sealed class ModelLifetimeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-lifetime-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private CompiledRunner Compile(string model, WeightLoading loading)
    {
        using var m = OnnxImporter.Import(Fixtures.Model(model));
        return CompiledRunner.CompileInMemory(m, model, new CompileOptions(), Path.Combine(_dir, Guid.NewGuid().ToString("N")), loading);
    }

    private static object?[] Prompt() => [Tensor.FromArray(DType.I64, [1, 16], Enumerable.Range(1, 16).Select(i => (long)(i * 31 % 500)).ToArray())];

    [Theory]
    [InlineData(WeightLoading.Map)]
    [InlineData(WeightLoading.Copy)]
    public void A_disposed_model_refuses_to_run(WeightLoading loading)
    {
        using var runner = Compile("stories260k/model-nocache.onnx", loading);
        runner.Model.RunValues(Prompt());
        runner.Model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => runner.Model.RunValues(Prompt()));
        runner.Model.Dispose(); // twice is fine
    }

    [Fact]
    public void A_disposed_decoder_refuses_its_sessions_steps()
    {
        using var runner = Compile("stories260k/model.onnx", WeightLoading.Copy);
        using var session = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!);
        session.Prefill([1, 2, 3]);
        runner.Model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => session.Decode(4));
    }

    [Fact]
    public void A_model_outlives_its_callers_blob_only_to_refuse_calls()
    {
        using var runner = Compile("stories260k/model-nocache.onnx", WeightLoading.Copy);
        var blob = runner.Blob!;
        blob.Dispose();
        Assert.True(blob.IsDisposed);
        var e = Assert.Throws<ObjectDisposedException>(() => runner.Model.RunValues(Prompt()));
        Assert.Contains("weight blob", e.Message);
    }

    [Fact]
    public void Dispose_during_runs_on_other_threads_waits_for_them_and_later_runs_are_refused()
    {
        using var runner = Compile("stories260k/model-nocache.onnx", WeightLoading.Copy);
        var model = runner.Model;
        var expected = ((Tensor)model.RunValues(Prompt())[0]!).Span<float>().ToArray();
        var completed = 0;
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            while (true)
            {
                try
                {
                    var got = ((Tensor)model.RunValues(Prompt())[0]!).Span<float>();
                    if (!got.SequenceEqual(expected)) failures.Add("a run gave other logits");
                    Interlocked.Increment(ref completed);
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
                catch (Exception e)
                {
                    failures.Add(e.GetType().Name + ": " + e.Message);
                    return;
                }
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        SpinWait.SpinUntil(() => Volatile.Read(ref completed) >= 8, 10_000);
        model.Dispose();
        Assert.True(threads.All(t => t.Join(10_000)));
        Assert.Empty(failures);
        Assert.True(completed >= 8);
    }
}
