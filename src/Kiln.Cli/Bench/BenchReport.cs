using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Kiln.Cli.Bench;

/// <summary>Min, median and max of repeated figures, in the unit measured.</summary>
public sealed record Spread(double Min, double Median, double Max)
{
    public static Spread? Of(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return null;
        var sorted = xs.Order().ToList();
        return new Spread(sorted[0], sorted[sorted.Count / 2], sorted[^1]);
    }
}

/// <summary>A value per engine (null where the engine did not run).</summary>
public sealed record PerEngine<T>(T? Kiln, T? Baseline, T? Ort);

/// <summary>One measured figure per engine. Ratios say how many times faster the pipeline under test is, from medians (ms inverted).</summary>
public sealed record BenchResult(string Metric, string Unit, PerEngine<Spread> Figures, PerEngine<int?>? LogitRows)
{
    public const string PrefillSameWork = "prefill_same_work";
    public const string PrefillLastPosition = "prefill_last_position";
    public const string Decode = "decode";
    public const string Latency = "latency";

    public double? RatioVsOrt => Faster(Figures.Kiln, Figures.Ort);

    public double? RatioVsBaseline => Faster(Figures.Kiln, Figures.Baseline);

    private double? Faster(Spread? a, Spread? b) =>
        a is null || b is null ? null : Unit == "tokens/s" ? a.Median / b.Median : b.Median / a.Median;
}

/// <summary>
/// Everything one <c>kiln bench</c> run measured and what it ran. <see cref="ToJson"/> is the documented contract
/// (docs/bench.md): fields are added, never renamed.
/// </summary>
public sealed record BenchReport(
    string Model, string Passes, string? BaselinePasses, string Weights, PerEngine<PageReport> Pages, int Threads, int Rounds,
    bool FullyPlanned, bool? BaselineFullyPlanned, OrtSettings? Ort, IReadOnlyList<BenchResult> Results,
    PerEngine<long?> BytesPerToken, PerEngine<double?> BandwidthShare, double? ReadBandwidth, long AllocatedBytesPerDecodeStep, string? Data)
{
    public string ToJson()
    {
        static JsonNode? Pages(PageReport? p) => p is null ? null : JsonValue.Create(PageBacking.Name(p.Pages));
        static JsonObject Engines<T>(PerEngine<T> e, Func<T?, JsonNode?> f) => new() { ["kiln"] = f(e.Kiln), ["baseline"] = f(e.Baseline), ["ort"] = f(e.Ort) };
        static JsonNode? Figure(Spread? s) => s is null ? null : new JsonObject { ["min"] = s.Min, ["median"] = s.Median, ["max"] = s.Max };
        var doc = new JsonObject
        {
            ["model"] = Model,
            ["passes"] = Passes,
            ["baseline_passes"] = BaselinePasses,
            ["weights"] = Weights,
            ["pages"] = Engines(this.Pages, Pages),
            ["threads"] = Threads,
            ["fully_planned"] = FullyPlanned,
            ["ort"] = Ort is null ? null : new JsonObject
            {
                ["version"] = Ort.Version, ["graph_optimization"] = Ort.GraphOptimization, ["threads"] = Ort.Threads, ["spinning"] = Ort.Spinning,
            },
            ["results"] = new JsonArray(Results.Select(r => (JsonNode)new JsonObject
            {
                ["metric"] = r.Metric,
                ["unit"] = r.Unit,
                ["kiln"] = Figure(r.Figures.Kiln),
                ["baseline"] = Figure(r.Figures.Baseline),
                ["ort"] = Figure(r.Figures.Ort),
                ["ratio_vs_ort"] = r.RatioVsOrt,
                ["ratio_vs_baseline"] = r.RatioVsBaseline,
                ["logit_rows"] = r.LogitRows is { } rows ? Engines(rows, n => n is { } v ? JsonValue.Create(v) : null) : null,
            }).ToArray()),
            ["bytes_per_token"] = Engines(BytesPerToken, b => b is { } v ? JsonValue.Create(v) : null),
            ["bandwidth_share"] = Engines(BandwidthShare, b => b is { } v ? JsonValue.Create(v) : null),
            ["allocated_bytes_per_decode_step"] = AllocatedBytesPerDecodeStep,
            // Added fields (beyond the first schema): what the page verdicts rest on, and the run's shape.
            ["huge_page_bytes"] = Engines(this.Pages, p => p is null ? null : JsonValue.Create(p.HugeBytes)),
            ["resident_bytes"] = Engines(this.Pages, p => p is null ? null : JsonValue.Create(p.ResidentBytes)),
            ["baseline_fully_planned"] = BaselineFullyPlanned,
            ["rounds"] = Rounds,
            ["read_bandwidth"] = ReadBandwidth,
            ["data"] = Data,
        };
        return doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    public void Print(TextWriter o)
    {
        var inv = CultureInfo.InvariantCulture;
        string Planned(bool p) => p ? "fully planned" : "not fully planned: some of it runs unplanned";
        string PageText(string who, PageReport? p) => p is null ? "" :
            $"{who} {PageBacking.Name(p.Pages)} ({Mb(p.HugeBytes)} of {Mb(p.ResidentBytes)} resident in huge pages)";
        o.WriteLine($"model: {Model}");
        o.WriteLine($"passes: {Passes} ({Planned(FullyPlanned)})");
        if (BaselinePasses is not null) o.WriteLine($"baseline passes: {BaselinePasses} ({Planned(BaselineFullyPlanned == true)})");
        o.WriteLine($"weights: {Weights}; pages: {string.Join(", ", new[] { PageText("Kiln", Pages.Kiln), PageText("baseline", Pages.Baseline), PageText("ONNX Runtime", Pages.Ort) }.Where(s => s.Length > 0))}");
        o.WriteLine($"threads: {Threads}; rounds: {Rounds}, the engine that runs first alternating by round");
        if (Ort is not null)
            o.WriteLine($"ONNX Runtime {Ort.Version}: graph optimization {Ort.GraphOptimization}, {Ort.Threads} intra-op threads, spinning {(Ort.Spinning ? "on" : "off")}");
        o.WriteLine();
        o.WriteLine($"{"metric",-28} {"engine",-14} {"min",10} {"median",10} {"max",10}  logit rows");
        foreach (var r in Results)
        {
            var first = true;
            foreach (var (who, s, rows) in new[] { ("Kiln", r.Figures.Kiln, r.LogitRows?.Kiln), ("baseline", r.Figures.Baseline, r.LogitRows?.Baseline), ("ONNX Runtime", r.Figures.Ort, r.LogitRows?.Ort) })
            {
                if (s is null) continue;
                var label = first ? $"{r.Metric} ({r.Unit})" : "";
                o.WriteLine($"{label,-28} {who,-14} {s.Min.ToString("0.00", inv),10} {s.Median.ToString("0.00", inv),10} {s.Max.ToString("0.00", inv),10}  {rows?.ToString(inv) ?? ""}");
                first = false;
            }
            var ratios = new List<string>();
            if (r.RatioVsOrt is { } ro) ratios.Add($"vs ONNX Runtime {ro.ToString("0.00", inv)}×");
            if (r.RatioVsBaseline is { } rb) ratios.Add($"vs baseline {rb.ToString("0.00", inv)}×");
            if (ratios.Count > 0) o.WriteLine($"{"",-28} Kiln faster by (medians): {string.Join(", ", ratios)}");
        }
        o.WriteLine();
        if (BytesPerToken.Kiln is not null)
        {
            string Traffic(string who, long? bytes, double? share) => bytes is null ? "" :
                $"{who} {Mb(bytes.Value)}{(share is { } s ? $" ({(100 * s).ToString("0", inv)}% of the read bandwidth at its decode median)" : "")}";
            o.WriteLine($"weight bytes read per decode step: {string.Join("; ", new[] { Traffic("Kiln", BytesPerToken.Kiln, BandwidthShare.Kiln), Traffic("baseline", BytesPerToken.Baseline, BandwidthShare.Baseline), Traffic("ONNX Runtime", BytesPerToken.Ort, BandwidthShare.Ort) }.Where(s => s.Length > 0))}");
            if (ReadBandwidth is { } bw) o.WriteLine($"read bandwidth measured: {(bw / 1e9).ToString("0.0", inv)} GB/s on {Threads} threads");
            o.WriteLine($"managed allocation per decode step (Kiln, all threads): {(AllocatedBytesPerDecodeStep / 1024.0).ToString("0.0", inv)} KiB");
        }
    }

    private static string Mb(long bytes) => (bytes / 1e6).ToString("0.0", CultureInfo.InvariantCulture) + " MB";
}
