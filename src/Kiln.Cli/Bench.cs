using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Kiln.CodeGen;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.Runtime.Decoding;
using Kiln.Runtime.Weights;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Cli;

/// <summary>Best and median of repeated timings, in the unit measured.</summary>
public sealed record Timing(double Best, double Median)
{
    public static Timing Of(IReadOnlyList<double> xs, bool higherIsBetter = false)
    {
        var sorted = xs.Order().ToList();
        return new Timing(higherIsBetter ? sorted[^1] : sorted[0], sorted[sorted.Count / 2]);
    }
}

/// <summary>One measured figure for Kiln and (with --ort) ONNX Runtime; the ratio says how much better Kiln is (above 1: Kiln wins).</summary>
public sealed record BenchLine(string Metric, string Unit, Timing Kiln, Timing? Ort)
{
    public double? Ratio => Ort is null ? null : Unit.EndsWith("/s", StringComparison.Ordinal) ? Kiln.Median / Ort.Median : Ort.Median / Kiln.Median;

    public double? BestRatio => Ort is null ? null : Unit.EndsWith("/s", StringComparison.Ordinal) ? Kiln.Best / Ort.Best : Ort.Best / Kiln.Best;
}

/// <summary>
/// <c>kiln bench</c>: compiles the model in memory and times it, with ONNX Runtime in the same process when asked
/// (default session options, the same thread count, reused OrtValues, presents fed back without copies). Engines
/// alternate round by round so drift on a shared machine hits both. Decoders: prefill of 128 tokens and decode
/// tokens/s at batch 1 (greedy, after a 16-token prompt); other models: latency on a data set's inputs.
/// </summary>
public static class Bench
{
    public const int PrefillTokens = 128;
    public const int DecodeTokens = 64;

    /// <summary>Managed bytes allocated per decode step in the last decoder bench (all threads).</summary>
    public static long AllocatedPerDecodeStep { get; private set; }

    public static IReadOnlyList<BenchLine> Run(string modelPath, string? passes, bool withOrt, int threads, int rounds, string? data, bool json, TextWriter output,
        WeightLoading loading = WeightLoading.Copy, string? calibration = null)
    {
        threads = threads > 0 ? threads : Environment.ProcessorCount;
        var inv = CultureInfo.InvariantCulture;
        using var model = OnnxImporter.Import(modelPath);
        using var toCompile = OnnxImporter.Import(modelPath);
        var workDir = Engines.TempDir();
        try
        {
            var clock = Stopwatch.StartNew();
            using var runner = CompiledRunner.CompileInMemory(toCompile, modelPath, new CompileOptions { Passes = passes, Calibration = Commands.Calibration(calibration, toCompile.Graph) }, workDir, loading);
            if (!json) output.WriteLine($"compiled {Path.GetFileName(modelPath)} in {clock.Elapsed.TotalSeconds.ToString("0.0", inv)} s; weights {loading.ToString().ToLowerInvariant()}; {threads} threads, {rounds} rounds{(withOrt ? ", ONNX Runtime alongside" : "")}");
            using var ortOptions = new SessionOptions { IntraOpNumThreads = threads, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
            using var ort = withOrt ? new InferenceSession(modelPath, ortOptions) : null;
            Runtime.Kernels.MatMul.MaxThreads = threads;
            if (Environment.GetEnvironmentVariable("KILN_PROFILE") is "1" or "decode")
            {
                Runtime.Compiled.Generated.Profile = [];
                Runtime.Compiled.Generated.ProfileByShape = [];
            }
            // The weights the compiled code reads (after compression passes), for bytes per second.
            var weightBytes = toCompile.Graph.AllGraphs().SelectMany(g => g.Constants).Sum(c => c.Data?.ByteLength ?? 0);
            var lines = runner.Model.DecoderLayout is { } layout
                ? Decoder(runner, layout, model.Graph, ort, rounds)
                : Latency(runner, model.Graph, ort, rounds, data ?? DefaultData(modelPath, model.Graph));
            if (json)
            {
                output.WriteLine(JsonSerializer.Serialize(new
                {
                    model = modelPath,
                    threads,
                    rounds,
                    weightBytes,
                    results = lines.Select(l => new { l.Metric, l.Unit, kiln = l.Kiln, ort = l.Ort, ratio = l.Ratio, bestRatio = l.BestRatio }),
                }, new JsonSerializerOptions { WriteIndented = true }));
                return lines;
            }
            foreach (var l in lines)
            {
                var k = $"Kiln best {l.Kiln.Best.ToString("0.00", inv)} median {l.Kiln.Median.ToString("0.00", inv)} {l.Unit}";
                var o = l.Ort is { } t ? $"   ONNX Runtime best {t.Best.ToString("0.00", inv)} median {t.Median.ToString("0.00", inv)} {l.Unit}   ratio {l.Ratio!.Value.ToString("0.00", inv)}× (best {l.BestRatio!.Value.ToString("0.00", inv)}×)" : "";
                output.WriteLine($"{l.Metric}: {k}{o}");
            }
            if (Environment.GetEnvironmentVariable("KILN_PROFILE") is "decode") Runtime.Compiled.Generated.Profile ??= [];
            if (Runtime.Compiled.Generated.Profile is { } profile)
            {
                output.WriteLine("Kiln time by operator (all calls of this run):");
                foreach (var (op, (calls, ms)) in profile.OrderByDescending(p => p.Value.Milliseconds).Take(15))
                    output.WriteLine($"  {Runtime.Operators.OperatorTable.NameOf(op),-22} {calls,8} calls {ms.ToString("0.0", inv),10} ms");
                if (Runtime.Compiled.Generated.ProfileByShape is { Count: > 0 } byShape)
                {
                    output.WriteLine("Kiln time by operator and input shapes (the 15 slowest):");
                    foreach (var (key, (calls, ms)) in byShape.OrderByDescending(p => p.Value.Milliseconds).Take(15))
                        output.WriteLine($"  {ms.ToString("0.0", inv),10} ms {calls,8} calls  {key}");
                }
            }
            if (lines.FirstOrDefault(l => l.Unit == "tokens/s") is { } decode)
            {
                output.WriteLine($"managed allocation per decode step (Kiln, all threads): {(AllocatedPerDecodeStep / 1024.0).ToString("0.0", inv)} KiB");
                var bandwidth = MeasureReadBandwidth(threads);
                var bytesPerSecond = weightBytes * decode.Kiln.Median;
                output.WriteLine($"decode weight traffic: {(weightBytes / 1e6).ToString("0.0", inv)} MB × {decode.Kiln.Median.ToString("0.0", inv)} tokens/s = {(bytesPerSecond / 1e9).ToString("0.00", inv)} GB/s, " +
                    $"{(100 * bytesPerSecond / bandwidth).ToString("0", inv)}% of the measured read bandwidth ({(bandwidth / 1e9).ToString("0.0", inv)} GB/s on {threads} threads)" +
                    (decode.Ort is { } od ? $"; ONNX Runtime {(100 * weightBytes * od.Median / bandwidth).ToString("0", inv)}%" : ""));
            }
            return lines;
        }
        finally
        {
            Directory.Delete(workDir, recursive: true);
        }
    }

    private static string DefaultData(string modelPath, Graph graph)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        return DataSets.Find(dir).FirstOrDefault() ?? throw new KilnException(new Diagnostic(DiagnosticCode.InputMismatch,
            "not a decoder and no --data given (and no test_data_set_* beside the model): bench needs inputs", modelPath));
    }

    private static List<BenchLine> Latency(CompiledRunner runner, Graph graph, InferenceSession? ort, int rounds, string data)
    {
        var inputs = DataSets.ReadInputs(graph, data);
        var ortInputs = ort is null ? null : inputs.ToDictionary(kv => kv.Key, kv => ToOrt((Tensor)kv.Value!));
        var ortNames = ortInputs?.Keys.ToList();
        var ortValues = ortInputs?.Values.ToList();
        using var runOptions = new RunOptions();
        // Outputs go back to the model's pool once read, as an app's loop does with Recycle (ONNX Runtime's outputs
        // come from its arena): fresh output buffers every call would time the OS's page faults.
        // An output that is an input's own buffer (an Identity or Reshape of an input) is left alone.
        var inputStorage = inputs.Values.OfType<Tensor>().Select(t => t.Storage).ToHashSet(ReferenceEqualityComparer.Instance);
        void KilnRun()
        {
            foreach (var output in runner.Run(inputs).Values)
                if (output is not Tensor t || !inputStorage.Contains(t.Storage)) runner.Model.Recycle(output);
        }
        void OrtRun() { using var r = ort!.Run(runOptions, ortNames!, ortValues!, ort.OutputNames); }
        // Back-to-back runs until the JIT has settled: an op that runs once per call needs a few dozen calls before
        // tiered compilation optimizes it.
        Warm(KilnRun);
        if (ort is not null) Warm(OrtRun);
        // A round is the mean of enough consecutive runs to last about 200 ms (one run of a small model is too short to time alone).
        var perRound = Math.Clamp((int)(200 / Math.Max(0.01, Time(KilnRun))), 1, 1000);
        Runtime.Compiled.Generated.Profile?.Clear(); // profile the measured rounds only
        Runtime.Compiled.Generated.ProfileByShape?.Clear();
        double Mean(Action run) { Settle(); return Time(() => { for (var i = 0; i < perRound; i++) run(); }) / perRound; }
        double Kiln() => Mean(KilnRun);
        double Ort() => Mean(OrtRun);
        var k = new List<double>();
        var o = new List<double>();
        for (var i = 0; i < rounds; i++)
        {
            k.Add(Kiln());
            if (ort is not null) o.Add(Ort());
        }
        foreach (var v in ortValues ?? []) v.Dispose();
        return [new BenchLine($"latency ({Path.GetFileName(data)})", "ms", Timing.Of(k), ort is null ? null : Timing.Of(o))];
    }

    private static List<BenchLine> Decoder(CompiledRunner runner, DecoderLayout layout, Graph graph, InferenceSession? ort, int rounds)
    {
        var vocab = graph.Outputs[layout.Logits].Value.TensorType?.Shape?[2].Value ?? 256;
        var rng = new Random(7);
        var prompt = Enumerable.Range(0, PrefillTokens).Select(_ => (long)rng.Next(1, (int)Math.Min(vocab, 30000))).ToArray();
        using var session = new DecoderSession(runner.Model, layout, new DecoderOptions { MaxContext = PrefillTokens + DecodeTokens + 16 });
        using var ortDecoder = ort is null ? null : new OrtDecoder(ort, graph, layout);

        // KILN_PROFILE=decode profiles decode steps only.
        var decodeOnly = Environment.GetEnvironmentVariable("KILN_PROFILE") == "decode";
        var profile = Runtime.Compiled.Generated.Profile;
        double KilnPrefill()
        {
            session.Reset();
            if (decodeOnly) Runtime.Compiled.Generated.Profile = null;
            Settle();
            var ms = Time(() => session.Prefill(prompt));
            return ms;
        }
        double KilnDecode()
        {
            session.Reset();
            if (decodeOnly) Runtime.Compiled.Generated.Profile = null;
            var next = GreedySampler.Instance.Sample(session.Prefill(prompt.AsSpan(0, 16)), Random.Shared);
            if (decodeOnly) Runtime.Compiled.Generated.Profile = profile;
            Settle();
            return DecodeTokens / (Time(() =>
            {
                for (var i = 0; i < DecodeTokens; i++) next = GreedySampler.Instance.Sample(session.Decode(next), Random.Shared);
            }) / 1000);
        }
        double OrtPrefill() { ortDecoder!.Reset(); Settle(); return Time(() => ortDecoder.Step(prompt)); }
        double OrtDecode()
        {
            ortDecoder!.Reset();
            var next = ortDecoder.Step(prompt.AsSpan(0, 16).ToArray());
            var one = new long[1];
            Settle();
            return DecodeTokens / (Time(() =>
            {
                for (var i = 0; i < DecodeTokens; i++) { one[0] = next; next = ortDecoder.Step(one); }
            }) / 1000);
        }

        // Warm up until the JIT has settled (tiered compilation promotes hot kernels after a few hundred calls).
        Warm(() => { KilnPrefill(); KilnDecode(); });
        if (ort is not null) Warm(() => { OrtPrefill(); OrtDecode(); });
        profile?.Clear(); // profile the measured rounds only
        Runtime.Compiled.Generated.ProfileByShape?.Clear();
        var kp = new List<double>(); var kd = new List<double>(); var op = new List<double>(); var od = new List<double>();
        for (var i = 0; i < rounds; i++)
        {
            kp.Add(KilnPrefill());
            if (ort is not null) op.Add(OrtPrefill());
            kd.Add(KilnDecode());
            if (ort is not null) od.Add(OrtDecode());
        }
        // Managed allocation per decode step, all threads (the goal is none once warm).
        session.Reset();
        var token = GreedySampler.Instance.Sample(session.Prefill(prompt.AsSpan(0, 16)), Random.Shared);
        var before = GC.GetTotalAllocatedBytes(precise: true);
        for (var i = 0; i < DecodeTokens; i++) token = GreedySampler.Instance.Sample(session.Decode(token), Random.Shared);
        AllocatedPerDecodeStep = (GC.GetTotalAllocatedBytes(precise: true) - before) / DecodeTokens;
        return
        [
            new BenchLine($"prefill {PrefillTokens} tokens", "ms", Timing.Of(kp), ort is null ? null : Timing.Of(op)),
            new BenchLine($"decode batch 1 ({DecodeTokens} tokens after a 16-token prompt)", "tokens/s", Timing.Of(kd, true), ort is null ? null : Timing.Of(od, true)),
        ];
    }

    /// <summary>
    /// A pause before each timed block, so the other engine's thread pool has stopped spinning (both engines' idle
    /// workers spin briefly after each call; on two cores they would otherwise take turns slowing each other down).
    /// </summary>
    private static void Settle() => Thread.Sleep(50);

    /// <summary>Runs <paramref name="a"/> for about two seconds (at least twice).</summary>
    private static void Warm(Action a)
    {
        var sw = Stopwatch.StartNew();
        for (var i = 0; i < 2 || sw.Elapsed.TotalSeconds < 2; i++) a();
    }

    private static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        a();
        return sw.Elapsed.TotalMilliseconds;
    }

    private static OrtValue ToOrt(Tensor t)
    {
        var shape = t.Shape.Select(d => (long)d).ToArray();
        return t.Type switch
        {
            DType.F32 => OrtValue.CreateTensorValueFromMemory(t.Span<float>().ToArray(), shape),
            DType.I64 => OrtValue.CreateTensorValueFromMemory(t.Span<long>().ToArray(), shape),
            DType.I32 => OrtValue.CreateTensorValueFromMemory(t.Span<int>().ToArray(), shape),
            DType.F64 => OrtValue.CreateTensorValueFromMemory(t.Span<double>().ToArray(), shape),
            DType.U8 => OrtValue.CreateTensorValueFromMemory(t.Span<byte>().ToArray(), shape),
            DType.I8 => OrtValue.CreateTensorValueFromMemory(t.Span<sbyte>().ToArray(), shape),
            DType.Bool => OrtValue.CreateTensorValueFromMemory(t.Span<byte>().ToArray().Select(b => b != 0).ToArray(), shape),
            _ => throw new KilnException(DiagnosticCode.UnsupportedElementType, $"bench cannot hand a {t.Type.Name()} input to ONNX Runtime"),
        };
    }

    /// <summary>Read bandwidth over a buffer far larger than the caches, summed on <paramref name="threads"/> threads; bytes/s.</summary>
    public static double MeasureReadBandwidth(int threads)
    {
        var data = new float[128 << 20]; // 512 MiB
        data.AsSpan().Fill(1f);
        var best = double.MaxValue;
        for (var rep = 0; rep < 4; rep++)
        {
            var sw = Stopwatch.StartNew();
            var chunk = data.Length / threads;
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                System.Numerics.Tensors.TensorPrimitives.Sum(data.AsSpan(t * chunk, chunk)));
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return data.Length * 4.0 / best;
    }

    /// <summary>ONNX Runtime driving the same decoder: reused input OrtValues, each step's presents fed back as the next past without copies.</summary>
    private sealed class OrtDecoder : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly DecoderLayout _layout;
        private readonly Graph _graph;
        private readonly List<string> _inputNames;
        private readonly OrtValue?[] _inputs;
        private readonly RunOptions _run = new();
        private IDisposableReadOnlyCollection<OrtValue>? _last;
        private readonly List<OrtValue> _empties = [];
        private readonly Dictionary<int, (long[] Buffer, OrtValue Value)> _ids = [];

        public OrtDecoder(InferenceSession session, Graph graph, DecoderLayout layout)
        {
            _session = session;
            _graph = graph;
            _layout = layout;
            _inputNames = graph.Inputs.Select(v => v.Name).ToList();
            _inputs = new OrtValue?[_inputNames.Count];
            if (layout.AttentionMask >= 0 || layout.PositionIds >= 0)
                throw new KilnException(DiagnosticCode.UnsupportedOp, "bench --ort drives decoders without attention_mask/position_ids inputs");
            Reset();
        }

        public void Reset()
        {
            _last?.Dispose();
            _last = null;
            foreach (var e in _empties) e.Dispose();
            _empties.Clear();
            foreach (var k in _layout.PastKeys.Concat(_layout.PastValues))
            {
                var empty = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, _layout.KvHeads, 0, _layout.HeadDim]);
                _empties.Add(empty);
                _inputs[k] = empty;
            }
        }

        /// <summary>Runs the tokens (batch 1); returns the greedy next token.</summary>
        public long Step(long[] tokens)
        {
            if (!_ids.TryGetValue(tokens.Length, out var ids))
                _ids[tokens.Length] = ids = (new long[tokens.Length], OrtValue.CreateTensorValueFromMemory(new long[tokens.Length], [1, tokens.Length]));
            tokens.CopyTo(ids.Value.GetTensorMutableDataAsSpan<long>());
            _inputs[_layout.InputIds] = ids.Value;
            var outs = _session.Run(_run, _inputNames, _inputs!, _session.OutputNames);
            var logits = outs[_layout.Logits].GetTensorDataAsSpan<float>();
            var vocab = (int)outs[_layout.Logits].GetTensorTypeAndShape().Shape[^1];
            var next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits[^vocab..]);
            for (var i = 0; i < _layout.PastKeys.Length; i++)
            {
                _inputs[_layout.PastKeys[i]] = outs[_layout.PresentKeys[i]];
                _inputs[_layout.PastValues[i]] = outs[_layout.PresentValues[i]];
            }
            _last?.Dispose(); // the previous step's outputs were this step's inputs; no longer needed
            _last = outs;
            return next;
        }

        public void Dispose()
        {
            _last?.Dispose();
            foreach (var e in _empties) e.Dispose();
            foreach (var (_, v) in _ids.Values) v.Dispose();
            _run.Dispose();
        }
    }
}
