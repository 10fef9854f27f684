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

    public void Run(PassContext ctx)
    {
        var o = ctx.Options;
        var method = o.String("method") ?? "wanda";
        var sparsity = o.String("sparsity") is null ? (double?)null : o.Number("sparsity", 0.5, 0, 0.99);
        var pattern = SparsityPattern.Parse(o.String("pattern") ?? "unstructured", sparsity);
        var includeHead = o.Bool("embedding", false);
        var skip = o.List("skip");
        IWeightPruner pruner = method switch
        {
            "magnitude" => new MagnitudePruner(),
            "wanda" => new WandaPruner(),
            "sparsegpt" => new SparseGptPruner(o),
            _ => throw Bad($"option 'method' must be magnitude, wanda or sparsegpt, not '{method}'"),
        };
        if (method != "sparsegpt")
            foreach (var key in new[] { "damp", "block" })
                if (o.String(key) is not null) throw Bad($"option '{key}' applies to method=sparsegpt only");
        if (pruner.NeedsCalibration && ctx.Calibration is null)
            throw Bad($"method={method} needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");

        var layers = QuantizableLayers.Find(ctx.Graph);
        var chosen = layers.Where(l => includeHead || !(l.IsEmbedding || l.IsClassifier)).ToList();
        foreach (var l in layers.Except(chosen)) ctx.Notes.Add($"{l.GraphWeight.Name}: left dense ({(l.IsEmbedding ? "embedding" : "classifier")}; embedding=true prunes it)");
        var done = new Dictionary<Value, Value>();
        long zeros = 0, total = 0;
        var count = 0;

        IReadOnlyList<Node> Handle(QuantizableLayer layer, CalibrationWalk.LayerInputs? x)
        {
            count++;
            var input = layer.IsEmbedding ? 0 : 1;
            var weight = layer.GraphWeight;
            if (done.TryGetValue(weight, out var already))
            {
                layer.Node.SetInput(input, already);
                return [layer.Node];
            }
            if (Glob.MatchesAny(skip, weight.Name) || Glob.MatchesAny(skip, layer.Weight.Name))
            {
                ctx.Notes.Add($"{weight.Name}: skipped (skip=)");
                return [layer.Node];
            }
            var rows = layer.WeightRows();
            var (outputs, inputs) = layer.RowsAreOutputs ? ((int)layer.Weight.Data!.Dims[0], (int)layer.Weight.Data.Dims[1]) : ((int)layer.Weight.Data!.Dims[1], (int)layer.Weight.Data.Dims[0]);
            ctx.Report($"layer {count}/{chosen.Count} {weight.Name} ({pattern.Name})");
            var byMagnitude = x is null;
            var pruned = (byMagnitude ? new MagnitudePruner() : pruner).Prune(rows, outputs, inputs, pattern, x);
            var layerZeros = pruned.Count(v => v == 0);
            zeros += layerZeros;
            total += pruned.Length;
            // The graph's weight in its own orientation: [inputs, outputs] unless the node reads rows as outputs.
            var graphRowsAreOutputs = weight == layer.Weight ? layer.RowsAreOutputs : !layer.RowsAreOutputs;
            var stored = graphRowsAreOutputs ? pruned : Transpose(pruned, outputs, inputs);
            var fresh = ctx.Graph.AddConstant(ctx.Graph.UniqueName(weight.Name + ".pruned"), ctx.Keep(TensorData.FromArray(DType.F32, weight.Data!.Dims, stored)));
            done[weight] = fresh;
            layer.Node.SetInput(input, fresh);
            if (weight.Uses.Count == 0 && weight.Owner.Constants.Contains(weight)) weight.Owner.RemoveConstant(weight);
            var tail = pattern.DenseTail(inputs);
            ctx.Layers.Add(new LayerReport(weight.Name, $"f32, {pattern.Name} (zeros stored dense)", 32, 4L * pruned.Length, 4L * pruned.Length,
                Quantize.RelativeError(rows, pruned), x is null ? null : Quantize.OutputError(x, rows, pruned, outputs),
                $"{(double)layerZeros / pruned.Length:P1} zeros" + (tail > 0 ? $"; the last {tail} inputs of each row stay dense (partial {pattern.Group}-group)" : "")
                + (byMagnitude && pruner is not MagnitudePruner ? "; by magnitude (no calibration activations)" : "")));
            ctx.Count($"pruned layers ({method}, {pattern.Name})");
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
        if (total > 0) ctx.Notes.Add($"{(double)zeros / total:P1} of {total:N0} weights in pruned layers are zero");
    }

    private static float[] Transpose(float[] rows, int outputs, int inputs)
    {
        var t = new float[rows.Length];
        for (var r = 0; r < outputs; r++)
            for (var j = 0; j < inputs; j++) t[j * outputs + r] = rows[r * inputs + j];
        return t;
    }

    private static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'prune': {what}"));
}
