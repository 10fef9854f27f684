using Kiln.Ir;
using Kiln.Ir.Diagnostics;

namespace Kiln.Passes;

/// <summary>
/// <c>prune{method=wanda sparsity=0.5 pattern=unstructured embedding=false skip=[…]}</c>: weight pruning of every
/// product with a 2-D constant weight that <c>quantize</c> takes (MatMul, kiln:MatMulAdd, Gemm). Methods:
/// <c>magnitude</c> (|W|), <c>wanda</c> (|W|·‖X‖₂) and <c>sparsegpt</c> (OBS mask selection with weight updates;
/// options <c>damp</c> and <c>block</c> as GPTQ's); the last two need calibration data and run layer by layer on
/// what the pruned earlier layers produce. Patterns: <c>unstructured</c> (<c>sparsity</c>, default 0.5, of each
/// output — of each block of 128 columns for sparsegpt) or <c>N:M</c> (N kept of every M consecutive inputs;
/// a row's last partial group stays dense, as the report says). Embedding tables and the classifier are left
/// alone unless <c>embedding=true</c> (tables are then pruned by magnitude: a lookup has no activations to weigh).
/// Pruned weights are stored as zeros in the f32 weight: <c>quantize</c> afterwards keeps them zero, and
/// <c>sparse-weights</c> afterwards stores them sparsely (bitmask panels) where that is faster.
/// </summary>
public sealed class Prune : IPass
{
    public string Name => "prune";

    public string Summary => "weight pruning (magnitude, wanda, sparsegpt; unstructured or N:M) of products with constant weights";

    public IReadOnlyList<string> OptionNames => ["method", "sparsity", "pattern", "embedding", "skip", "damp", "block"];

    public bool Compresses => true;

    public void Run(PassContext ctx)
    {
        var pruner = new LayerPruner(ctx);
        var layers = QuantizableLayers.Find(ctx.Graph);
        var chosen = layers.Where(pruner.Includes).ToList();
        var count = 0;

        IReadOnlyList<Node> Handle(QuantizableLayer layer, CalibrationWalk.LayerInputs? x)
        {
            ctx.Report($"layer {++count}/{chosen.Count} {layer.GraphWeight.Name} ({pruner.Pattern.Name})");
            pruner.PruneInGraph(layer, x);
            return [layer.Node];
        }

        if (ctx.Calibration is { } data && chosen.Any(l => !l.IsEmbedding))
        {
            var byNode = chosen.Where(l => !l.IsEmbedding).ToDictionary(l => l.Node);
            CalibrationWalk.Run(ctx, data, byNode.Keys.ToHashSet(), (node, x) => Handle(byNode[node], x));
            foreach (var l in chosen.Where(l => l.IsEmbedding)) Handle(l, null);
        }
        else
        {
            foreach (var l in chosen) Handle(l, null);
        }
        pruner.Finish();
    }

    /// <summary>
    /// Whether <c>prune</c> followed by this <c>quantize</c> runs as one calibration walk: both calibrate, so each layer
    /// is pruned and then quantized on the same inputs (what the pruned and quantized earlier layers produce), and the
    /// quantizer starts from the pruner's values (SparseGPT's updated weights) without a second pass over the model.
    /// </summary>
    public static bool SharesWalkWith(PassOptions prune, PassOptions quantize) =>
        (prune.String("method") ?? "wanda") is "wanda" or "sparsegpt" && quantize.String("method") is "gptq" or "awq";

    internal static float[] Transpose(float[] rows, int outputs, int inputs)
    {
        var t = new float[rows.Length];
        for (var r = 0; r < outputs; r++)
            for (var j = 0; j < inputs; j++) t[j * outputs + r] = rows[r * inputs + j];
        return t;
    }

    internal static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'prune': {what}"));
}

/// <summary>
/// The per-layer work of <c>prune</c>, on a layer's weight as [outputs, inputs] rows: which layers it takes (options
/// <c>embedding</c>, <c>skip</c>), the method, the pattern, and the layer rows and counts of the pass's report.
/// <c>prune</c> runs it on its own calibration walk; <c>quantize</c> runs it on its walk when the two share one.
/// </summary>
public sealed class LayerPruner
{
    private readonly PassContext _ctx;
    private readonly IWeightPruner _pruner;
    private readonly string _method;
    private readonly bool _includeHead;
    private readonly IReadOnlyList<string>? _skip;
    private readonly Dictionary<Value, Value> _done = [];
    private long _zeros, _total;

    public SparsityPattern Pattern { get; }

    public LayerPruner(PassContext ctx)
    {
        _ctx = ctx;
        var o = ctx.Options;
        _method = o.String("method") ?? "wanda";
        var sparsity = o.String("sparsity") is null ? (double?)null : o.Number("sparsity", 0.5, 0, 0.99);
        Pattern = SparsityPattern.Parse(o.String("pattern") ?? "unstructured", sparsity);
        _includeHead = o.Bool("embedding", false);
        _skip = o.List("skip");
        _pruner = _method switch
        {
            "magnitude" => new MagnitudePruner(),
            "wanda" => new WandaPruner(),
            "sparsegpt" => new SparseGptPruner(o),
            _ => throw Prune.Bad($"option 'method' must be magnitude, wanda or sparsegpt, not '{_method}'"),
        };
        if (_method != "sparsegpt")
            foreach (var key in new[] { "damp", "block" })
                if (o.String(key) is not null) throw Prune.Bad($"option '{key}' applies to method=sparsegpt only");
        if (_pruner.NeedsCalibration && ctx.Calibration is null)
            throw Prune.Bad($"method={_method} needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");
    }

    /// <summary>Whether the layer is pruned at all (embedding tables and the classifier only with <c>embedding=true</c>); notes the ones left dense.</summary>
    public bool Includes(QuantizableLayer l)
    {
        if (_includeHead || !(l.IsEmbedding || l.IsClassifier)) return true;
        _ctx.Notes.Add($"{l.GraphWeight.Name}: left dense ({(l.IsEmbedding ? "embedding" : "classifier")}; embedding=true prunes it)");
        return false;
    }

    /// <summary>
    /// The layer's rows pruned (by magnitude when <paramref name="x"/> is null: a lookup has no activations to weigh),
    /// reported; null when <c>skip</c> names it.
    /// </summary>
    public float[]? PruneRows(QuantizableLayer layer, float[] rows, CalibrationWalk.LayerInputs? x)
    {
        var weight = layer.GraphWeight;
        if (Glob.MatchesAny(_skip, weight.Name) || Glob.MatchesAny(_skip, layer.Weight.Name))
        {
            _ctx.Notes.Add($"{weight.Name}: skipped (skip=)");
            return null;
        }
        var (outputs, inputs) = layer.RowsAreOutputs ? ((int)layer.Weight.Data!.Dims[0], (int)layer.Weight.Data.Dims[1]) : ((int)layer.Weight.Data!.Dims[1], (int)layer.Weight.Data.Dims[0]);
        var byMagnitude = x is null;
        var pruned = (byMagnitude ? new MagnitudePruner() : _pruner).Prune(rows, outputs, inputs, Pattern, x);
        var layerZeros = pruned.Count(v => v == 0);
        _zeros += layerZeros;
        _total += pruned.Length;
        var tail = Pattern.DenseTail(inputs);
        _ctx.Layers.Add(new LayerReport(weight.Name, $"f32, {Pattern.Name} (zeros stored dense)", 32, 4L * pruned.Length, 4L * pruned.Length,
            Quantize.RelativeError(rows, pruned), x is null ? null : Quantize.OutputError(x, rows, pruned, outputs),
            $"{(double)layerZeros / pruned.Length:P1} zeros" + (tail > 0 ? $"; the last {tail} inputs of each row stay dense (partial {Pattern.Group}-group)" : "")
            + (byMagnitude && _pruner is not MagnitudePruner ? "; by magnitude (no calibration activations)" : "")));
        _ctx.Count($"pruned layers ({_method}, {Pattern.Name})");
        return pruned;
    }

    /// <summary>Prunes the layer's weight (once per weight: a second reader gets the same pruned constant) and makes the node read it.</summary>
    public void PruneInGraph(QuantizableLayer layer, CalibrationWalk.LayerInputs? x)
    {
        var input = layer.IsEmbedding ? 0 : 1;
        var weight = layer.GraphWeight;
        if (_done.TryGetValue(weight, out var already))
        {
            layer.Node.SetInput(input, already);
            return;
        }
        if (PruneRows(layer, layer.WeightRows(), x) is not { } pruned) return;
        var (outputs, inputs) = layer.RowsAreOutputs ? ((int)layer.Weight.Data!.Dims[0], (int)layer.Weight.Data.Dims[1]) : ((int)layer.Weight.Data!.Dims[1], (int)layer.Weight.Data.Dims[0]);
        // The graph's weight in its own orientation: [inputs, outputs] unless the node reads rows as outputs.
        var graphRowsAreOutputs = weight == layer.Weight ? layer.RowsAreOutputs : !layer.RowsAreOutputs;
        var stored = graphRowsAreOutputs ? pruned : Prune.Transpose(pruned, outputs, inputs);
        var fresh = _ctx.Graph.AddConstant(_ctx.Graph.UniqueName(weight.Name + ".pruned"), _ctx.Keep(TensorData.FromArray(DType.F32, weight.Data!.Dims, stored)));
        _done[weight] = fresh;
        layer.Node.SetInput(input, fresh);
        if (weight.Uses.Count == 0 && weight.Owner.Constants.Contains(weight)) weight.Owner.RemoveConstant(weight);
    }

    /// <summary>The pass's closing note.</summary>
    public void Finish()
    {
        if (_total > 0) _ctx.Notes.Add($"{(double)_zeros / _total:P1} of {_total:N0} weights in pruned layers are zero");
    }
}
