using System.Diagnostics;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;

namespace Kiln.Passes;

/// <summary>An IR-to-IR transformation. One pass is one file; its summary says what it rewrites.</summary>
public interface IPass
{
    /// <summary>The name pipelines use (<c>fold</c>).</summary>
    string Name { get; }

    /// <summary>One line for <c>kiln passes</c> and the docs.</summary>
    string Summary { get; }

    /// <summary>Option names the pass reads (for the unknown-option error).</summary>
    IReadOnlyList<string> OptionNames { get; }

    /// <summary>
    /// Whether the pass changes what the model computes (a compression method, not an exact rewrite):
    /// <c>reconstruct</c>'s teacher is the model before the first such pass of its pipeline.
    /// </summary>
    bool Compresses => false;

    void Run(PassContext context);
}

/// <summary>What a pass sees: the model, its options, and a log for the compile report.</summary>
public sealed class PassContext(Model model, PassOptions options)
{
    public Model Model { get; } = model;

    public Graph Graph => Model.Graph;

    public PassOptions Options { get; } = options;

    public List<string> Notes { get; } = [];

    /// <summary>Counts of what the pass did, by kind ("folded", "fused rmsnorm"), for the report.</summary>
    public SortedDictionary<string, int> Counts { get; } = new(StringComparer.Ordinal);

    public void Count(string what, int n = 1) => Counts[what] = Counts.GetValueOrDefault(what) + n;

    /// <summary>Per-layer results of a compression pass, for the report's layer table.</summary>
    public List<LayerReport> Layers { get; } = [];

    /// <summary>Inputs for the passes that calibrate on activations (gptq, awq, static activation scales); null when none were given.</summary>
    public CalibrationSet? Calibration
    {
        get
        {
            CalibrationRead = true;
            return _calibration;
        }
        init => _calibration = value;
    }

    private readonly CalibrationSet? _calibration;

    /// <summary>
    /// The model as it was before the pipeline's first compression pass (<see cref="IPass.Compresses"/>), kept only when
    /// a later pass needs it (<c>reconstruct</c>); null otherwise. It shares the model's constant data.
    /// </summary>
    public Model? Teacher { get; init; }

    /// <summary>Where large tensors the pass produces go (mapped scratch files); null keeps them in memory.</summary>
    public WeightSpill? Spill { get; init; }

    /// <summary>A tensor the pass produced, as the graph should hold it: mapped from a scratch file when there is a spill and it is large.</summary>
    public TensorData Keep(TensorData data) => Spill?.Keep(data) ?? data;

    /// <summary>Whether the pass looked at <see cref="Calibration"/> (a tool says so when data it was given went unused).</summary>
    public bool CalibrationRead { get; private set; }

    /// <summary>Receives progress lines from inside the pass (build messages); null when nobody listens.</summary>
    public Action<string>? Progress { get; init; }

    /// <summary>
    /// Reports progress within the pass: a pass that works through the model piece by piece (a pattern at a time,
    /// a layer at a time for the compression passes) says where it is, e.g. "layer 3/12".
    /// </summary>
    public void Report(string line) => Progress?.Invoke(line);
}

/// <summary>What one pass changed: node counts by op before and after, its own counts, notes and layers, time taken.</summary>
public sealed record PassReport(string Step, int NodesBefore, int NodesAfter, IReadOnlyDictionary<string, int> OpDelta,
    IReadOnlyDictionary<string, int> Counts, IReadOnlyList<string> Notes, double Milliseconds)
{
    public IReadOnlyList<LayerReport> Layers { get; init; } = [];

    /// <summary>Whether the pass read the calibration data it was given.</summary>
    public bool UsedCalibration { get; init; }
}

/// <summary>
/// One compressed layer: its weight, format, stored bits per weight and bytes (f32 bytes before), the relative
/// Frobenius error of the weight, and of the layer's output on calibration inputs when the pass had them.
/// </summary>
public sealed record LayerReport(string Weight, string Format, double BitsPerWeight, long Bytes, long FloatBytes, double WeightError, double? OutputError, string? Note)
{
    /// <summary>A low-rank layer's rank.</summary>
    public int? Rank { get; init; }

    /// <summary>Parameters the layer keeps, of <see cref="Parameters"/> (low rank: r·(in + out) of in·out).</summary>
    public long? ParametersKept { get; init; }

    public long? Parameters { get; init; }

    /// <summary>
    /// For a re-fitted layer (<c>reconstruct</c>), its output error against the teacher before the refit;
    /// <see cref="OutputError"/> is then the error after, and <see cref="WeightError"/> the refit parameters' relative change.
    /// </summary>
    public double? OutputErrorBefore { get; init; }
}

/// <summary>Every registered pass by name.</summary>
public static class PassRegistry
{
    private static readonly Dictionary<string, Func<IPass>> Factories = new(StringComparer.Ordinal)
    {
        ["fold"] = () => new ConstantFolding(),
        ["dce"] = () => new DeadCodeElimination(),
        ["cse"] = () => new CommonSubexpressionElimination(),
        ["fuse"] = () => new Fusion(),
        ["prune"] = () => new Prune(),
        ["prune-structured"] = () => new PruneStructured(),
        ["lowrank"] = () => new LowRank(),
        ["sparse-weights"] = () => new SparseWeightStorage(),
        ["quantize"] = () => new Quantize(),
        ["smoothquant"] = () => new SmoothQuant(),
        ["quantize-activations"] = () => new QuantizeActivations(),
        ["quantize-kv"] = () => new QuantizeKv(),
        ["reconstruct"] = () => new Reconstruct(),
    };

    public static IEnumerable<IPass> All => Factories.Values.Select(f => f());

    public static IPass Create(string name) => Factories.TryGetValue(name, out var f) ? f()
        : throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline,
            $"unknown pass '{name}' (passes: {string.Join(", ", Factories.Keys)})"));
}

/// <summary>Runs a pipeline over a model, verifying the graph after each pass, and reports what each pass changed.</summary>
public static class PassManager
{
    public static IReadOnlyList<PassReport> Run(Model model, string? pipeline = null) => Run(model, PassPipeline.Parse(pipeline ?? PassPipeline.Default));

    /// <param name="afterPass">called after each pass has run and the graph verified (IR dumps, progress)</param>
    /// <param name="progress">receives the passes' own progress lines, each prefixed with its pass name</param>
    /// <param name="calibration">inputs for the calibrating passes</param>
    /// <param name="noOps">
    /// passes (by name) that run as no-ops: parsed and reported, but the graph is left as it is. For tests: a pass's
    /// .kir test must fail when its pass does nothing, or it checks nothing.
    /// </param>
    public static IReadOnlyList<PassReport> Run(Model model, PassPipeline pipeline, Action<PassReport>? afterPass = null, Action<string>? progress = null,
        CalibrationSet? calibration = null, WeightSpill? spill = null, IReadOnlySet<string>? noOps = null)
    {
        // Resolve every pass first, so a typo late in the pipeline fails before any work is done.
        var passes = pipeline.Steps.Select(s => (Step: s, Pass: PassRegistry.Create(s.Name))).ToList();
        var reports = new List<PassReport>();
        bool Runs(int i) => noOps?.Contains(passes[i].Step.Name) != true;
        // The teacher is copied only when a reconstruct will read it, just before the first compression pass.
        var firstCompression = Enumerable.Range(0, passes.Count).FirstOrDefault(i => passes[i].Pass.Compresses && Runs(i), -1);
        var teacherAt = firstCompression >= 0 && passes.Skip(firstCompression).Any(p => p.Pass is Reconstruct) ? firstCompression : -1;
        Model? teacher = null;
        for (var index = 0; index < passes.Count; index++)
        {
            var (step, pass) = passes[index];
            var before = CountOps(model.Graph);
            if (index == teacherAt) teacher = GraphCopy.Copy(model);
            PassContext Context(PassInvocation s) =>
                new(model, s.Options) { Calibration = calibration, Spill = spill, Teacher = teacher, Progress = progress is null ? null : line => progress($"{s.Name}: {line}") };
            var ctx = Context(step);
            var clock = Stopwatch.StartNew();
            if (pass is Prune && index + 1 < passes.Count && passes[index + 1] is { Pass: Quantize quantize } next && calibration is not null
                && noOps?.Contains(step.Name) != true && noOps?.Contains(next.Step.Name) != true && Prune.SharesWalkWith(step.Options, next.Step.Options))
            {
                // One calibration walk for the pair: each layer is pruned, then quantized, on the same inputs.
                var quantizeCtx = Context(next.Step);
                quantize.Run(quantizeCtx, new LayerPruner(ctx));
                step.Options.CheckAllUsed(pass.OptionNames);
                next.Step.Options.CheckAllUsed(quantize.OptionNames);
                ctx.Notes.Add("pruned on quantize's calibration walk (one walk for both)");
                var joined = Report(next.Step, quantizeCtx, before, clock);
                index++;
                // Pruning changes weights, not nodes: its report has no node delta and no time of its own (both are quantize's).
                reports.Add(new PassReport(step.ToString(), before.Values.Sum(), before.Values.Sum(), new Dictionary<string, int>(), ctx.Counts, ctx.Notes, 0)
                    { Layers = ctx.Layers, UsedCalibration = ctx.CalibrationRead });
                afterPass?.Invoke(reports[^1]);
                reports.Add(joined);
                afterPass?.Invoke(joined);
                continue;
            }
            else if (noOps?.Contains(step.Name) != true)
            {
                pass.Run(ctx);
                step.Options.CheckAllUsed(pass.OptionNames);
            }
            reports.Add(Report(step, ctx, before, clock));
            afterPass?.Invoke(reports[^1]);
        }
        return reports;

        PassReport Report(PassInvocation step, PassContext ctx, Dictionary<string, int> before, Stopwatch clock)
        {
            Verifier.Verify(model.Graph);
            var after = CountOps(model.Graph);
            var delta = before.Keys.Union(after.Keys).Order(StringComparer.Ordinal)
                .Select(k => (k, d: after.GetValueOrDefault(k) - before.GetValueOrDefault(k))).Where(x => x.d != 0)
                .ToDictionary(x => x.k, x => x.d);
            return new PassReport(step.ToString(), before.Values.Sum(), after.Values.Sum(), delta, ctx.Counts, ctx.Notes, clock.Elapsed.TotalMilliseconds) { Layers = ctx.Layers, UsedCalibration = ctx.CalibrationRead && calibration is not null };
        }
    }

    /// <summary>Nodes by op in the graph and its subgraphs.</summary>
    public static Dictionary<string, int> CountOps(Graph graph) =>
        graph.AllGraphs().SelectMany(g => g.Nodes).GroupBy(n => n.QualifiedOp).ToDictionary(g => g.Key, g => g.Count());
}
