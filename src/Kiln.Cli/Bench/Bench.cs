using System.Diagnostics;
using System.Globalization;
using Kiln.CodeGen;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Passes;
using Kiln.Runtime.Weights;
using Kiln.Compiler;

namespace Kiln.Cli.Bench;

/// <summary>What <c>kiln bench</c> is asked to run.</summary>
public sealed record BenchOptions(string Model)
{
    /// <summary>The pipeline under test (null: <see cref="PassPipeline.Default"/>).</summary>
    public string? Passes { get; init; }

    /// <summary>A second Kiln pipeline timed in the same run (null: none).</summary>
    public string? BaselinePasses { get; init; }

    public bool Ort { get; init; }

    /// <summary>Threads for every engine; 0: every core.</summary>
    public int Threads { get; init; }

    public int Rounds { get; init; } = 5;

    /// <summary>The data set to time (models that are not decoders).</summary>
    public string? Data { get; init; }

    public WeightLoading Weights { get; init; } = WeightLoading.Copy;

    public Pages Pages { get; init; } = Pages.Huge;

    public string? Calibration { get; init; }
}

/// <summary>
/// <c>kiln bench</c>: compiles the model in memory (one or two pipelines) and times it, with ONNX Runtime in the same
/// process when asked. Every engine does the same work for every ratio: prefill figures against ONNX Runtime compute
/// every position's logits on both sides (<c>prefill_same_work</c>); what generation's prefill costs Kiln (only the
/// last position's logits) is reported apart (<c>prefill_last_position</c>). Every engine's weights get the same page
/// treatment (<see cref="PageBacking"/>), measured and reported. Engines run round by round with the first engine
/// rotating, so drift on a shared machine hits all of them. Decoders: prefill of 128 tokens and decode tokens/s at
/// batch 1 (greedy, after a 16-token prompt); other models: latency on a data set's inputs.
/// </summary>
public static class Bench
{
    public const int PrefillTokens = 128;
    public const int DecodeTokens = 64;

    public static BenchReport Run(BenchOptions o, TextWriter progress)
    {
        var threads = o.Threads > 0 ? o.Threads : Environment.ProcessorCount;
        var inv = CultureInfo.InvariantCulture;
        // Plain pages: off for the whole process before any engine allocates, so no engine gets any.
        if (o.Pages == Pages.Plain) PageBacking.DisableHugePages();
        using var model = OnnxImporter.Import(o.Model);
        var workDir = Engines.TempDir();
        var contenders = new List<Contender>();
        var compiled = new List<Model>();
        try
        {
            var kiln = Compile(o, o.Passes, Role.Kiln, threads, workDir, compiled, progress);
            contenders.Add(kiln.Contender);
            var pages = new Dictionary<Role, PageReport>();
            var blobs = new Dictionary<Role, CompiledRunner> { [Role.Kiln] = kiln.Runner };
            var layout = kiln.Runner.Model.DecoderLayout;
            string? data = layout is null ? o.Data ?? DefaultData(o.Model) : null;
            var inputs = data is null ? null : DataSets.ReadInputs(model.Graph, data);
            if (inputs is not null) kiln.Contender.SetInputs(inputs);

            Graph? baselineGraph = null;
            bool? baselinePlanned = null;
            KilnContender? baseline = null;
            if (o.BaselinePasses is not null)
            {
                var b = Compile(o, o.BaselinePasses, Role.Baseline, threads, workDir, compiled, progress);
                baseline = b.Contender;
                contenders.Add(baseline);
                if (inputs is not null) baseline.SetInputs(inputs);
                blobs[Role.Baseline] = b.Runner;
                baselineGraph = b.Graph;
                baselinePlanned = b.FullyPlanned;
            }

            OrtContender? ort = null;
            IReadOnlyList<MemoryRegion> ortRegions = [];
            if (o.Ort)
            {
                // ONNX Runtime allocates its weights itself: the regions its session creation added are its weights
                // (and their prepacked copies).
                var before = PageBacking.Snapshot();
                ort = new OrtContender(o.Model, model.Graph, layout, inputs, threads);
                contenders.Add(ort);
                ortRegions = PageBacking.Grown(before, PageBacking.Snapshot());
            }

            // After the warm-up every engine's weights are resident (a mapped blob is paged in by its first run):
            // Kiln's are collapsed into huge pages if asked, and ONNX Runtime's get what Kiln's got.
            void TreatPages()
            {
                foreach (var (role, r) in blobs)
                {
                    var (address, length) = r.Blob!.Region;
                    if (o.Pages == Pages.Huge) PageBacking.Collapse(address, length);
                    pages[role] = PageBacking.Measure(address, length);
                }
                if (ort is null) return;
                if (o.Pages == Pages.Huge && pages.Values.All(p => p.Pages == Pages.Huge)) PageBacking.Collapse(ortRegions);
                else if (o.Pages == Pages.Huge)
                    progress.WriteLine("note: Kiln's weights got no huge pages (smaller than one, or a mapped file the kernel does not back with them), so ONNX Runtime's get none either");
                pages[Role.Ort] = PageBacking.Measure(ortRegions);
            }

            var prompt = Prompt(layout, model.Graph);
            var results = layout is not null ? RunDecoder(contenders, prompt, o.Rounds, TreatPages, progress) : RunLatency(contenders, o.Rounds, TreatPages, progress);
            kiln.Contender.PrintProfile(progress);

            PerEngine<long?> bytes = new(null, null, null);
            PerEngine<double?> shares = new(null, null, null);
            double? bandwidth = null;
            long allocated = 0;
            if (layout is not null)
            {
                allocated = kiln.Contender.AllocatedPerDecodeStep(prompt);
                bandwidth = MeasureReadBandwidth(threads);
                bytes = new(DecodeTraffic.BytesPerToken(kiln.Graph), baselineGraph is null ? null : DecodeTraffic.BytesPerToken(baselineGraph), ort is null ? null : DecodeTraffic.BytesPerToken(model.Graph));
                var decode = results.Single(r => r.Metric == BenchResult.Decode).Figures;
                double? Share(long? b, Spread? s) => b is null || s is null ? null : b.Value * s.Median / bandwidth.Value;
                shares = new(Share(bytes.Kiln, decode.Kiln), Share(bytes.Baseline, decode.Baseline), Share(bytes.Ort, decode.Ort));
            }
            return new BenchReport(o.Model, PassPipeline.Parse(o.Passes ?? PassPipeline.Default).ToString(),
                o.BaselinePasses is null ? null : PassPipeline.Parse(o.BaselinePasses).ToString(),
                o.Weights == WeightLoading.Map ? "map" : "copy",
                new PerEngine<PageReport>(pages.GetValueOrDefault(Role.Kiln), pages.GetValueOrDefault(Role.Baseline), pages.GetValueOrDefault(Role.Ort)),
                threads, o.Rounds, kiln.FullyPlanned, baselinePlanned, ort?.Options, results, bytes, shares, bandwidth, allocated, data);
        }
        finally
        {
            foreach (var c in contenders) c.Dispose();
            foreach (var m in compiled) m.Dispose();
            Directory.Delete(workDir, recursive: true);
        }
    }

    /// <summary>One compiled pipeline: its contender and runner, its optimized graph, whether it was fully planned.</summary>
    private sealed record CompiledContender(KilnContender Contender, CompiledRunner Runner, Graph Graph, bool FullyPlanned);

    /// <summary>Compiles one pipeline into a contender. The compiled model joins <paramref name="compiled"/> (its graph is read after the run; its constants may point into the model file's mapping).</summary>
    private static CompiledContender Compile(BenchOptions o, string? passes, Role role, int threads, string workDir, List<Model> compiled, TextWriter progress)
    {
        var clock = Stopwatch.StartNew();
        var toCompile = OnnxImporter.Import(o.Model);
        compiled.Add(toCompile);
        var options = new CompileOptions { Passes = passes, ClassName = role == Role.Baseline ? "BaselineModel" : null, Calibration = CalibrationInputs.Load(o.Calibration, toCompile.Graph) };
        var runner = CompiledRunner.CompileInMemory(toCompile, o.Model, options, Path.Combine(workDir, role.ToString()), o.Weights, out var result);
        runner.Model.Threads = threads;
        CalibrationInputs.NoteUnused(o.Calibration, result.Passes, result.Pipeline);
        progress.WriteLine($"compiled {(role == Role.Baseline ? "the baseline" : "the pipeline under test")} ({result.Pipeline}) in {clock.Elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s");
        var contender = new KilnContender(role, runner, profile: role == Role.Kiln && Environment.GetEnvironmentVariable("KILN_PROFILE") is "1" or "decode" or "prefill");
        return new CompiledContender(contender, runner, toCompile.Graph, result.FullyPlanned);
    }

    private static long[] Prompt(Runtime.Decoding.DecoderLayout? layout, Graph graph)
    {
        if (layout is null) return [];
        var vocab = graph.Outputs[layout.Logits].Value.TensorType?.Shape?[2].Value ?? 256;
        var rng = new Random(7);
        return Enumerable.Range(0, PrefillTokens).Select(_ => (long)rng.Next(1, (int)Math.Min(vocab, 30000))).ToArray();
    }

    private static string DefaultData(string modelPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        return DataSets.Find(dir).FirstOrDefault() ?? throw new KilnException(new Diagnostic(DiagnosticCode.InputMismatch,
            "not a decoder and no --data given (and no test_data_set_* beside the model): bench needs inputs", modelPath));
    }

    /// <summary>The engines in round <paramref name="round"/>'s order: the first engine rotates.</summary>
    private static IEnumerable<Contender> InOrder(IReadOnlyList<Contender> all, int round) =>
        Enumerable.Range(0, all.Count).Select(i => all[(i + round) % all.Count]);

    private static List<BenchResult> RunDecoder(IReadOnlyList<Contender> all, long[] prompt, int rounds, Action afterWarmUp, TextWriter progress)
    {
        // Warm up until the JIT has settled (tiered compilation promotes hot kernels after a few hundred calls).
        foreach (var c in all)
        {
            progress.WriteLine($"warming up {Label(c.Role)}");
            Warm(() =>
            {
                c.PrefillSameWork?.Invoke(prompt);
                c.PrefillLastPosition?.Invoke(prompt);
                c.Decode?.Invoke(prompt);
            });
        }
        afterWarmUp();
        foreach (var c in all.OfType<KilnContender>()) c.ClearProfile(); // profile the measured rounds only
        var sameWork = all.ToDictionary(c => c.Role, _ => new List<double>());
        var lastPosition = all.ToDictionary(c => c.Role, _ => new List<double>());
        var decode = all.ToDictionary(c => c.Role, _ => new List<double>());
        for (var r = 0; r < rounds; r++)
        {
            progress.WriteLine($"round {r + 1}/{rounds}");
            foreach (var c in InOrder(all, r)) if (c.PrefillSameWork is { } f) sameWork[c.Role].Add(f(prompt));
            foreach (var c in InOrder(all, r)) if (c.PrefillLastPosition is { } f) lastPosition[c.Role].Add(f(prompt));
            foreach (var c in InOrder(all, r)) if (c.Decode is { } f) decode[c.Role].Add(f(prompt));
        }
        PerEngine<Spread> Figures(Dictionary<Role, List<double>> xs) =>
            new(Spread.Of(xs.GetValueOrDefault(Role.Kiln) ?? []), Spread.Of(xs.GetValueOrDefault(Role.Baseline) ?? []), Spread.Of(xs.GetValueOrDefault(Role.Ort) ?? []));
        int? Rows(Role role, Func<Contender, int?> f) => all.FirstOrDefault(c => c.Role == role) is { } c ? f(c) : null;
        return
        [
            new BenchResult(BenchResult.PrefillSameWork, "ms", Figures(sameWork),
                new PerEngine<int?>(Rows(Role.Kiln, _ => prompt.Length), Rows(Role.Baseline, _ => prompt.Length), Rows(Role.Ort, _ => prompt.Length))),
            new BenchResult(BenchResult.PrefillLastPosition, "ms", Figures(lastPosition),
                new PerEngine<int?>(Rows(Role.Kiln, c => c.LastPositionLogitRows(prompt.Length)), Rows(Role.Baseline, c => c.LastPositionLogitRows(prompt.Length)), null)),
            new BenchResult(BenchResult.Decode, "tokens/s", Figures(decode), null),
        ];
    }

    private static List<BenchResult> RunLatency(IReadOnlyList<Contender> all, int rounds, Action afterWarmUp, TextWriter progress)
    {
        foreach (var c in all)
        {
            progress.WriteLine($"warming up {Label(c.Role)}");
            Warm(c.Run!);
        }
        afterWarmUp();
        // A round is the mean of enough consecutive runs to last about 200 ms (one run of a small model is too short to time alone).
        var perRound = Math.Clamp((int)(200 / Math.Max(0.01, Contender.Time(all[0].Run!))), 1, 1000);
        foreach (var c in all.OfType<KilnContender>()) c.ClearProfile();
        var times = all.ToDictionary(c => c.Role, _ => new List<double>());
        for (var r = 0; r < rounds; r++)
        {
            progress.WriteLine($"round {r + 1}/{rounds}");
            foreach (var c in InOrder(all, r))
            {
                var run = c.Run!;
                Contender.Settle();
                times[c.Role].Add(Contender.Time(() => { for (var i = 0; i < perRound; i++) run(); }) / perRound);
            }
        }
        return [new BenchResult(BenchResult.Latency, "ms",
            new(Spread.Of(times.GetValueOrDefault(Role.Kiln) ?? []), Spread.Of(times.GetValueOrDefault(Role.Baseline) ?? []), Spread.Of(times.GetValueOrDefault(Role.Ort) ?? [])), null)];
    }

    private static string Label(Role r) => r switch { Role.Kiln => "Kiln", Role.Baseline => "the baseline", _ => "ONNX Runtime" };

    /// <summary>Runs <paramref name="a"/> for about two seconds (at least twice).</summary>
    private static void Warm(Action a)
    {
        var sw = Stopwatch.StartNew();
        for (var i = 0; i < 2 || sw.Elapsed.TotalSeconds < 2; i++) a();
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
}
