using Kiln.Ir;
using Kiln.Ir.Diagnostics;

namespace Kiln.Passes;

/// <summary>
/// <c>prune-structured{ffn=0.25 heads=0.25 method=flap allocation=uniform bias=auto skip=[…]}</c>: removes whole
/// feed-forward channels and whole attention head groups (the query heads that share a key/value head, with it), so
/// every product, the attention's head counts and a decoder's KV cache get smaller — an ordinary smaller model, not
/// masks. Importance of a channel or group (on the input X of the block's output product W, rows c of the unit):
/// <c>magnitude</c> (the norm of every weight of the unit), <c>wanda-sp</c> (Σ_c ‖X_c‖₂ · Σ|W_c|), <c>flap</c>
/// (the variance of the unit's contribution X_u·W_u over the calibration tokens; An et al., 2024). The fraction,
/// rounded to whole units over all blocks, is removed evenly (<c>allocation=uniform</c>) or from the units with the
/// smallest shares of their block's importance (<c>adaptive</c>); every block keeps one. Bias compensation adds the
/// removed units' mean contribution over the calibration data (Σ_c mean(X_c)·W_c) to the output product;
/// <c>bias=auto</c> measures the model with and without it on a held-back slice of the calibration data and keeps
/// the better.
/// </summary>
public sealed class PruneStructured : IPass
{
    public string Name => "prune-structured";

    public string Summary => "structured pruning: whole FFN channels and attention head groups removed (magnitude, wanda-sp, flap), with bias compensation";

    public IReadOnlyList<string> OptionNames => ["ffn", "heads", "method", "allocation", "bias", "skip"];

    public bool Compresses => true;

    public void Run(PassContext ctx)
    {
        var o = ctx.Options;
        var ffn = o.Number("ffn", 0, 0, 0.99);
        var heads = o.Number("heads", 0, 0, 0.99);
        var method = o.String("method") ?? "flap";
        if (method is not ("magnitude" or "wanda-sp" or "flap")) throw Bad($"option 'method' must be magnitude, wanda-sp or flap, not '{method}'");
        var allocation = o.String("allocation") ?? "uniform";
        if (allocation is not ("uniform" or "adaptive")) throw Bad($"option 'allocation' must be uniform or adaptive, not '{allocation}'");
        var bias = o.String("bias") ?? "auto";
        if (bias is not ("auto" or "true" or "false")) throw Bad($"option 'bias' must be auto, true or false, not '{bias}'");
        var skip = o.List("skip");
        var g = ctx.Graph;

        var blocks = new List<PrunedBlock>();
        if (ffn > 0)
        {
            var found = PrunableBlocks.FeedForwards(g);
            if (found.Count == 0) ctx.Notes.Add("ffn: no feed-forward block found (products whose outputs combine element by element into one product)");
            blocks.AddRange(found.Where(b => !Skipped(ctx, skip, b.Name, b.Ins.Select(p => p.Weight.Name))).Select(b => PrunedBlock.Of(b, ffn)));
        }
        if (heads > 0)
        {
            var found = PrunableBlocks.Attentions(g);
            if (found.Count == 0) ctx.Notes.Add("heads: no attention block found (query/key/value products split into heads, kiln:GroupQueryAttention, an output product)");
            blocks.AddRange(found.Where(b => !Skipped(ctx, skip, b.Name, [b.Query.Weight.Name, b.Key.Weight.Name, b.Value.Weight.Name])).Select(b => PrunedBlock.Of(b, heads)));
        }
        if (ffn == 0 && heads == 0) ctx.Notes.Add("nothing asked: ffn=0 and heads=0 remove nothing");
        if (blocks.Count == 0) return;

        var data = ctx.Calibration;
        var needsData = method != "magnitude" || bias == "true";
        if (needsData && data is null)
            throw Bad($"{(method != "magnitude" ? $"method={method}" : "bias=true")} needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");
        var compensate = data is not null && bias != "false";
        if (data is null && bias == "auto") ctx.Notes.Add("no bias compensation (bias=auto without calibration data)");

        // bias=auto judges the bias, fitted on the other samples, on a held-back slice of them (the last quarter); the
        // units are ranked, and the bias kept is fitted, on all of them.
        CalibrationSet? held = null;
        var fitSamples = data?.Samples.Count ?? 0;
        if (data is not null && bias == "auto")
        {
            var n = data.Samples.Count;
            var back = n >= 2 ? Math.Max(1, n / 4) : 0;
            held = new CalibrationSet(data.Source, back > 0 ? data.Samples.Skip(n - back).ToList() : data.Samples);
            fitSamples = n - back;
            if (back == 0) ctx.Notes.Add("bias=auto: one calibration sample, so it also judges the two variants");
        }
        if (data is not null && (method != "magnitude" || compensate))
        {
            var byNode = blocks.ToDictionary(b => b.Out.Node);
            CalibrationWalk.Run(ctx, data, byNode.Keys.ToHashSet(), (node, x) =>
            {
                byNode[node].Statistics.Add(x);
                byNode[node].FitStatistics.Add(x, 0, x.SampleTokens.Take(fitSamples).Sum());
                return [node];
            });
        }
        foreach (var b in blocks) b.Score(method);
        Allocate(blocks, allocation);

        var reference = held is null ? null : OutputDivergence.Logits(g, held);
        var parametersBefore = Parameters(g);
        var flopsBefore = StructuredRewrite.ProductFlopsPerToken(g);
        var pruned = blocks.Where(b => b.Removed.Count > 0).ToList();
        var fitted = compensate ? pruned.ToDictionary(b => b, b => b.CompensatingBias(b.FitStatistics)) : [];
        var final = compensate ? pruned.ToDictionary(b => b, b => b.CompensatingBias(b.Statistics)) : [];
        foreach (var b in pruned) b.Rewrite(ctx);
        StructuredRewrite.Finish(ctx);

        var compensated = false;
        if (compensate && pruned.Count > 0)
        {
            compensated = true;
            if (reference is not null)
            {
                var without = OutputDivergence.Measure(g, held!, reference);
                var undo = pruned.Select(b => StructuredRewrite.AddBias(ctx, b.Out.Node, fitted[b], b.Name)).ToList();
                var with = OutputDivergence.Measure(g, held!, reference);
                compensated = with < without;
                ctx.Notes.Add(FormattableString.Invariant($"bias=auto: mean KLD on {held!.Samples.Count} held-back calibration sample(s) {with:0.####} with bias compensation (fitted on the other {fitSamples}), {without:0.####} without: {(compensated ? "kept, refitted on all samples" : "left out")}"));
                foreach (var u in undo) u();
            }
            if (compensated)
                foreach (var b in pruned) StructuredRewrite.AddBias(ctx, b.Out.Node, final[b], b.Name);
        }
        foreach (var b in blocks) ctx.Layers.Add(b.Report(compensated));
        var parametersAfter = Parameters(g);
        var flopsAfter = StructuredRewrite.ProductFlopsPerToken(g);
        foreach (var kind in new[] { "ffn", "attention" })
        {
            var of = blocks.Where(b => b.Kind == kind).ToList();
            if (of.Count > 0) ctx.Count($"{(kind == "ffn" ? "ffn channels" : "attention head groups")} removed", of.Sum(b => b.Removed.Count));
        }
        ctx.Notes.Add(FormattableString.Invariant($"parameters {parametersBefore:N0} → {parametersAfter:N0}, product FLOPs per token {flopsBefore:N0} → {flopsAfter:N0} ({method}, {allocation}{(compensated ? ", bias compensation" : "")})"));
    }

    /// <summary>
    /// Decides each block's removed units. The budget of a kind (channels, head groups) is round(fraction × its
    /// units over all blocks), every block keeping at least one unit. Uniform: ⌊fraction × units⌋ from every block,
    /// and what rounding leaves over one more from the blocks whose next unit carries the smallest share of the
    /// block's importance. Adaptive: the budget taken from the units with the smallest shares of their block's
    /// importance, across all blocks of the kind (scores are not comparable between blocks; FLAP's standardization
    /// within each block is not used because it says nothing for a block of two units: they always score ±1).
    /// </summary>
    private static void Allocate(List<PrunedBlock> blocks, string allocation)
    {
        foreach (var kind in blocks.GroupBy(b => b.Kind))
        {
            var list = kind.ToList();
            var budget = Math.Min((int)Math.Round(list[0].Fraction * list.Sum(b => b.Units), MidpointRounding.AwayFromZero), list.Sum(b => b.Units - 1));
            if (allocation == "uniform")
            {
                var counts = list.ToDictionary(b => b, b => Math.Min(b.Units - 1, (int)Math.Floor(b.Fraction * b.Units)));
                var left = budget - counts.Values.Sum();
                foreach (var b in list.Where(b => counts[b] < b.Units - 1).OrderBy(b => b.ShareOfLowest(counts[b])).Take(Math.Max(0, left))) counts[b]++;
                foreach (var b in list) b.RemoveLowest(counts[b]);
                continue;
            }
            var ranked = list.SelectMany(b => b.Shares().Select((z, unit) => (b, unit, z))).OrderBy(x => x.z).ThenBy(x => x.unit).ToList();
            var taken = list.ToDictionary(b => b, _ => new List<int>());
            foreach (var (b, unit, _) in ranked)
            {
                if (budget == 0) break;
                if (taken[b].Count + 1 >= b.Units) continue;
                taken[b].Add(unit);
                budget--;
            }
            foreach (var b in list) b.Remove(taken[b]);
        }
    }

    private static bool Skipped(PassContext ctx, IReadOnlyList<string>? skip, string name, IEnumerable<string> others)
    {
        if (!Glob.MatchesAny(skip, name) && !others.Any(n => Glob.MatchesAny(skip, n))) return false;
        ctx.Notes.Add($"{name}: skipped (skip=)");
        return true;
    }

    /// <summary>f32 parameters the graph holds.</summary>
    public static long Parameters(Graph g) => g.AllGraphs().SelectMany(x => x.Constants).Where(c => c.Data is { Elem: DType.F32 }).Sum(c => c.Data!.ElementCount);

    internal static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'prune-structured': {what}"));
}
