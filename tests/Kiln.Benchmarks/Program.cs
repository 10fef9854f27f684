using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Kiln.Evaluator;
using Kiln.Onnx;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

// Usage:
//   dotnet run -c Release --project tests/Kiln.Benchmarks -- matmul        BenchmarkDotNet: f32 MatMul 1024³
//   dotnet run -c Release --project tests/Kiln.Benchmarks -- kernels       BenchmarkDotNet: decoding kernels (GEMV, attention, RMSNorm, RoPE, depthwise Conv)
//   dotnet run -c Release --project tests/Kiln.Benchmarks -- fma-peak      measured FP32 FMA peak (1 thread, all threads)
//   dotnet run -c Release --project tests/Kiln.Benchmarks -- prefill MODEL [TOKENS] [REPS]
//                                                                          evaluator vs ONNX Runtime, interleaved
switch (args.FirstOrDefault())
{
    case "matmul":
        BenchmarkRunner.Run<MatMulBenchmark>(args: args[1..]);
        break;
    case "kernels":
        BenchmarkRunner.Run<DecodingKernelBenchmarks>(args: args[1..]);
        break;
    case "fma-peak":
        FmaPeak.Report();
        break;
    case "prefill":
        Prefill.Run(args[1], args.Length > 2 ? int.Parse(args[2]) : 128, args.Length > 3 ? int.Parse(args[3]) : 5);
        break;
    default:
        Console.Error.WriteLine("usage: matmul | kernels | fma-peak | prefill MODEL [TOKENS] [REPS]");
        return 1;
}
return 0;

/// <summary>f32 1024×1024×1024 through the runtime's GEMM (2·n³ FLOPs per call).</summary>
public class MatMulBenchmark
{
    private Tensor _a = null!, _b = null!;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        var a = new float[1024 * 1024];
        var b = new float[1024 * 1024];
        for (var i = 0; i < a.Length; i++) { a[i] = (float)rng.NextDouble(); b[i] = (float)rng.NextDouble(); }
        _a = Tensor.FromArray(DType.F32, [1024, 1024], a);
        _b = Tensor.FromArray(DType.F32, [1024, 1024], b);
    }

    [Benchmark]
    public Tensor MatMul1024() => Kiln.Runtime.Kernels.MatMul.Multiply(_a, _b);
}

/// <summary>
/// The kernels one decoded token runs, at the 110m preset's sizes (dim 768, 12 heads of 64, FFN 2048, a 512-token
/// cache, vocab 32000): GEMV against a row-major weight and against a transposed (tied-embedding) one, grouped-query
/// attention for one query, RMSNorm, rotary embedding; and a MobileNet depthwise 3×3 Conv (PaddleOCR).
/// </summary>
[MemoryDiagnoser]
public class DecodingKernelBenchmarks
{
    private Tensor _x = null!, _w = null!, _embedding = null!, _q = null!, _k = null!, _v = null!, _scale = null!, _cos = null!, _sin = null!, _row = null!;
    private Tensor _image = null!, _depthwise = null!;
    private Kiln.Runtime.Kernels.Window _window = null!;
    private float[] _logits = null!;

    private static Tensor Random(int[] shape, int seed, bool persistent = false)
    {
        var rng = new Random(seed);
        var data = new float[Tensor.Count(shape)];
        for (var i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
        return Tensor.Wrap(DType.F32, shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()).ToArray(), persistent);
    }

    [GlobalSetup]
    public void Setup()
    {
        _x = Random([1, 1, 768], 1);
        _w = Random([768, 2048], 2, persistent: true);
        _embedding = Random([32000, 768], 3, persistent: true);
        _logits = new float[32000];
        _q = Random([1, 12, 1, 64], 4);
        _k = Random([1, 12, 512, 64], 5);
        _v = Random([1, 12, 512, 64], 6);
        _scale = Random([768], 7);
        _row = Random([1, 12, 1, 64], 8);
        _cos = Random([1, 32], 9);
        _sin = Random([1, 32], 10);
        _image = Random([1, 64, 80, 80], 11);
        _depthwise = Random([64, 1, 3, 3], 12, persistent: true);
        _window = Kiln.Runtime.Kernels.Window.Resolve([80, 80], [3, 3], [1, 1], null, [1, 1, 1, 1], "NOTSET");
    }

    [Benchmark(Description = "GEMV 768×2048 (6 MB)")]
    public Tensor Gemv() => Kiln.Runtime.Kernels.MatMul.Multiply(_x, _w);

    [Benchmark(Description = "GEMV transposed 32000×768 (98 MB, classifier)")]
    public float[] GemvTransposed()
    {
        Kiln.Runtime.Kernels.MatMul.Gemm(_x.Span<float>(), 768, false, _embedding.Span<float>(), 768, true, _logits, 32000, 1, 32000, 768, false);
        return _logits;
    }

    [Benchmark(Description = "GQA 12 heads × 512 cached")]
    public Tensor Attention() => Kiln.Runtime.Kernels.Fused.GroupQueryAttention(_q, _k, _v, null, 0.125f);

    [Benchmark(Description = "RMSNorm 768")]
    public Tensor RmsNorm() => Kiln.Runtime.Kernels.Fused.RmsNorm(_x, _scale, 1e-5f);

    [Benchmark(Description = "RoPE 12×64")]
    public Tensor Rope() => Kiln.Runtime.Kernels.Fused.Rotary(_row, _cos, _sin, interleaved: true);

    [Benchmark(Description = "depthwise Conv 3×3 64×80×80")]
    public Tensor Depthwise() => Kiln.Runtime.Kernels.Convolution.Conv(_image, _depthwise, null, _window, 64);
}

/// <summary>
/// Peak FP32 FMA throughput as measured: each thread runs 12 independent 512-bit FMA chains (enough to cover FMA
/// latency × pipes), so the figure is what the cores deliver at the clock they actually run at.
/// </summary>
internal static class FmaPeak
{
    public static void Report()
    {
        if (!Avx512F.IsSupported) { Console.WriteLine("no AVX-512: peak not measured"); return; }
        Measure(1);
        var one = Measure(1);
        var all = Measure(Environment.ProcessorCount);
        Console.WriteLine($"FP32 FMA peak: {one:0.0} GFLOP/s on 1 thread, {all:0.0} GFLOP/s on {Environment.ProcessorCount} threads");
    }

    private static double Measure(int threads)
    {
        const long iterations = 100_000_000;
        var sw = Stopwatch.StartNew();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => Chains(iterations));
        var seconds = sw.Elapsed.TotalSeconds;
        // 12 chains × 16 lanes × 2 FLOPs per FMA.
        return threads * iterations * 12.0 * 16 * 2 / seconds / 1e9;
    }

    private static float Chains(long n)
    {
        var m = Vector512.Create(0.999999f);
        var a = Vector512.Create(1e-7f);
        Vector512<float> c0 = Vector512.Create(1f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < n; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(c0, m, a); c1 = Avx512F.FusedMultiplyAdd(c1, m, a); c2 = Avx512F.FusedMultiplyAdd(c2, m, a);
            c3 = Avx512F.FusedMultiplyAdd(c3, m, a); c4 = Avx512F.FusedMultiplyAdd(c4, m, a); c5 = Avx512F.FusedMultiplyAdd(c5, m, a);
            c6 = Avx512F.FusedMultiplyAdd(c6, m, a); c7 = Avx512F.FusedMultiplyAdd(c7, m, a); c8 = Avx512F.FusedMultiplyAdd(c8, m, a);
            c9 = Avx512F.FusedMultiplyAdd(c9, m, a); c10 = Avx512F.FusedMultiplyAdd(c10, m, a); c11 = Avx512F.FusedMultiplyAdd(c11, m, a);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }
}

/// <summary>A prefill of TOKENS tokens (batch 1, empty past) through the evaluator and ONNX Runtime, alternating.</summary>
internal static class Prefill
{
    public static void Run(string path, int tokens, int reps)
    {
        using var model = OnnxImporter.Import(path);
        var interpreter = new Interpreter(model.Graph, new EvaluatorOptions { Profile = Environment.GetEnvironmentVariable("KILN_PROFILE") == "1" });
        var rng = new Random(7);
        var ids = Enumerable.Range(0, tokens).Select(_ => (long)rng.Next(1, 1000)).ToArray();
        var inputs = new Dictionary<string, object?> { ["input_ids"] = Tensor.FromArray(DType.I64, [1, tokens], ids) };
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        // ORT's idle worker threads spin after a run; on a 2-core machine they would steal the next engine's cores.
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        using var session = new InferenceSession(path, options);
        var ortInputs = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [1, tokens]),
        };
        foreach (var v in model.Graph.Inputs.Where(v => v.Name.StartsWith("past_key_values", StringComparison.Ordinal)))
        {
            var shape = ((Kiln.Ir.TensorType)v.Type).Shape!.Dims.Select(d => d.Value ?? (d.SymbolName == "batch" ? 1 : 0)).ToArray();
            inputs[v.Name] = Tensor.Zeros(DType.F32, shape.Select(d => (int)d).ToArray());
            ortInputs[v.Name] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), shape);
        }
        double Kiln()
        {
            var sw = Stopwatch.StartNew();
            interpreter.Run(inputs);
            return sw.Elapsed.TotalMilliseconds;
        }
        double Ort()
        {
            var sw = Stopwatch.StartNew();
            using var outs = session.Run(new RunOptions(), ortInputs.Keys.ToList(), ortInputs.Values.ToList(), session.OutputNames);
            return sw.Elapsed.TotalMilliseconds;
        }
        Kiln();
        Ort();
        var k = new List<double>();
        var o = new List<double>();
        for (var i = 0; i < reps; i++)
        {
            o.Add(Ort());
            k.Add(Kiln());
        }
        var km = k.Order().ElementAt(k.Count / 2);
        var om = o.Order().ElementAt(o.Count / 2);
        Console.WriteLine($"prefill {tokens} tokens, {reps} interleaved runs each (median): Kiln evaluator {km:0.0} ms, ONNX Runtime {om:0.0} ms, ratio {km / om:0.00}×");
        Console.WriteLine($"evaluator peak memory in tensors: {MemoryBudget.Format(interpreter.PeakBytes)}");
        foreach (var (op, (n, ms)) in interpreter.Profile.OrderByDescending(p => p.Value.Milliseconds).Take(12))
            Console.WriteLine($"  {op,-20} {n,6} nodes {ms / (reps + 1),9:0.0} ms per run");
    }
}
