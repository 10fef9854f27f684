using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// <c>lowrank{method=svd-llm ratio=0.8 rank=uniform skip=[…]}</c>: every product with a 2-D constant weight W [in, out]
/// (MatMul, kiln:MatMulAdd; embeddings and the classifier stay) becomes X·A·B with A [in, r] and B [r, out] keeping
/// <c>ratio</c> of W's parameters — two products, which <c>quantize</c> and <c>prune</c> then treat like any other.
/// Methods in <see cref="LowRankFactorization"/>; <c>asvd</c> and <c>svd-llm</c> need calibration data and go layer
/// by layer on what the factored earlier layers produce. <c>rank=uniform</c> keeps the ratio in every layer;
/// <c>rank=auto</c> spends the same parameters where they remove the most truncation error: ranks are added one at a
/// time to the layer whose next singular value carries the largest share of its layer's energy per parameter. A
/// layer where no rank saves parameters is left alone and reported.
/// </summary>
public sealed class LowRank : IPass
{
    public string Name => "lowrank";

    public string Summary => "low-rank factorization (svd, asvd, svd-llm) of products with constant weights";

    public IReadOnlyList<string> OptionNames => ["method", "ratio", "rank", "skip"];

    public bool Compresses => true;

    public void Run(PassContext ctx)
    {
        var o = ctx.Options;
        var method = o.String("method") ?? "svd-llm";
        if (method is not ("svd" or "asvd" or "svd-llm")) throw Bad($"option 'method' must be svd, asvd or svd-llm, not '{method}'");
        var ratio = o.Number("ratio", 0.8, 0.01, 1);
        var allocation = o.String("rank") ?? "uniform";
        if (allocation is not ("uniform" or "auto")) throw Bad($"option 'rank' must be uniform or auto, not '{allocation}'");
        var skip = o.List("skip");
        if (method != "svd" && ctx.Calibration is null)
            throw Bad($"method={method} needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");

        var layers = new List<QuantizableLayer>();
        foreach (var l in QuantizableLayers.Find(ctx.Graph))
        {
            if (l.IsEmbedding || l.IsClassifier) { ctx.Notes.Add($"{l.GraphWeight.Name}: left alone ({(l.IsEmbedding ? "embedding" : "classifier")})"); continue; }
            if (l.Node.QualifiedOp == "Gemm") { ctx.Notes.Add($"{l.GraphWeight.Name}: left alone (Gemm; fuse turns constant-weight products into MatMul or kiln:MatMulAdd)"); continue; }
            if (Glob.MatchesAny(skip, l.Weight.Name)) { ctx.Notes.Add($"{l.Weight.Name}: skipped (skip=)"); continue; }
            if (l.Weight.Uses.Count != 1) { ctx.Notes.Add($"{l.Weight.Name}: left alone (read by {l.Weight.Uses.Count} nodes)"); continue; }
            layers.Add(l);
        }
        var ranks = layers.ToDictionary(l => l.Node, l => LowRankFactorization.RankFor(ratio, Dims(l).In, Dims(l).Out));
        if (allocation == "auto") ranks = AutoRanks(ctx, method, ratio, layers);

        var count = 0;
        IReadOnlyList<Node> Handle(QuantizableLayer layer, CalibrationWalk.LayerInputs? x)
        {
            var (inputs, outputs) = Dims(layer);
            var rank = ranks[layer.Node];
            var w = layer.Weight.Data!.ToArray<float>();
            ctx.Report($"layer {++count}/{layers.Count} {layer.Weight.Name} (rank {rank})");
            if (rank == 0)
            {
                ctx.Notes.Add($"{layer.Weight.Name}: left alone (no rank of [{inputs}, {outputs}] keeps {ratio:0.##} of its parameters or fewer)");
                return [layer.Node];
            }
            var f = LowRankFactorization.Factor(method, w, inputs, outputs, rank, x);
            var kept = (long)rank * (inputs + outputs);
            ctx.Layers.Add(new LayerReport(layer.Weight.Name, $"f32 A [{inputs}, {rank}] · B [{rank}, {outputs}]", 32.0 * kept / ((long)inputs * outputs), 4 * kept, 4L * inputs * outputs,
                LowRankFactorization.WeightError(w, f), x is null ? null : LowRankFactorization.OutputError(x, w, f),
                method) { Rank = rank, ParametersKept = kept, Parameters = (long)inputs * outputs });
            ctx.Count($"factored layers ({method})");
            return Rewrite(ctx, layer, f);
        }

        // With calibration inputs every method runs on the walk, so the report has each layer's output error.
        EachLayer(ctx, layers, walk: true, Handle);
    }

    /// <summary>Hands every layer to <paramref name="handle"/>: on the calibration walk when there is data and <paramref name="walk"/>, else without inputs.</summary>
    private static void EachLayer(PassContext ctx, List<QuantizableLayer> layers, bool walk, Func<QuantizableLayer, CalibrationWalk.LayerInputs?, IReadOnlyList<Node>> handle)
    {
        if (walk && ctx.Calibration is { } data)
        {
            var byNode = layers.ToDictionary(l => l.Node);
            CalibrationWalk.Run(ctx, data, byNode.Keys.ToHashSet(), (node, x) => handle(byNode[node], x));
            return;
        }
        foreach (var l in layers) handle(l, null);
    }

    private static (int In, int Out) Dims(QuantizableLayer l) => ((int)l.Weight.Data!.Dims[0], (int)l.Weight.Data.Dims[1]);

    /// <summary>
    /// rank=auto: one walk over the unfactored model measures every layer's spectrum under the method; then ranks go,
    /// one at a time, to the layer whose next singular value holds the largest share of its layer's energy per
    /// parameter it costs, until the layers hold what the uniform ratio would (a layer never past the rank where
    /// it would save nothing).
    /// </summary>
    private static Dictionary<Node, int> AutoRanks(PassContext ctx, string method, double ratio, List<QuantizableLayer> layers)
    {
        var spectra = new Dictionary<Node, double[]>();
        // svd reads no activations: its spectra need no walk.
        EachLayer(ctx, layers, walk: method != "svd", (l, x) =>
        {
            var (i, o) = Dims(l);
            spectra[l.Node] = LowRankFactorization.Factor(method, l.Weight.Data!.ToArray<float>(), i, o, 0, x).SingularValues;
            return [l.Node];
        });
        var budget = layers.Sum(l => (long)LowRankFactorization.RankFor(ratio, Dims(l).In, Dims(l).Out) * (Dims(l).In + Dims(l).Out));
        var ranks = layers.ToDictionary(l => l.Node, _ => 0);
        var energy = layers.ToDictionary(l => l.Node, l => spectra[l.Node].Sum(s => s * s));
        var queue = new PriorityQueue<QuantizableLayer, double>();
        double Gain(QuantizableLayer l)
        {
            var s = spectra[l.Node];
            var r = ranks[l.Node];
            var (i, o) = Dims(l);
            return r < s.Length && energy[l.Node] > 0 ? -(s[r] * s[r] / energy[l.Node]) / (i + o) : 0;
        }
        foreach (var l in layers) queue.Enqueue(l, Gain(l));
        while (queue.TryDequeue(out var l, out var gain) && gain < 0)
        {
            var (i, o) = Dims(l);
            if (budget < i + o) continue;
            // Past this rank the factors would hold as much as W: the layer stays as it is.
            if ((long)(ranks[l.Node] + 1) * (i + o) >= (long)i * o) continue;
            ranks[l.Node]++;
            budget -= i + o;
            queue.Enqueue(l, Gain(l));
        }
        return ranks;
    }

    /// <summary>X·W (+ C, activation) becomes (X·A)·B (+ C, activation): two nodes in the product's place.</summary>
    private static IReadOnlyList<Node> Rewrite(PassContext ctx, QuantizableLayer layer, LowRankFactors f)
    {
        var g = ctx.Graph;
        var n = layer.Node;
        var w = layer.Weight;
        var a = g.AddConstant(g.UniqueName(w.Name + ".A"), ctx.Keep(TensorData.FromArray(DType.F32, [f.Inputs, f.Rank], f.A)));
        var b = g.AddConstant(g.UniqueName(w.Name + ".B"), ctx.Keep(TensorData.FromArray(DType.F32, [f.Rank, f.Outputs], f.B)));
        var x = n.Inputs[0]!;
        var y = n.Outputs[0]!;
        var index = g.Nodes.IndexOf(n);
        var innerType = x.TensorType is { Shape: { } s } xt ? (IrType)(xt with { Shape = new Shape(s.Dims.Take(s.Rank - 1).Append(Dim.Const(f.Rank))) }) : IrType.Unknown;
        var first = g.AddNode("MatMul", "", n.Name is null ? null : n.Name + "/A", [x, a], [g.UniqueName(y.Name + ".lowrank")], null, [innerType]);
        var second = n.QualifiedOp == KilnOp.Qualified.MatMulAdd
            ? g.AddNode(KilnOp.MatMulAdd, KilnOp.Domain, n.Name, [first.Outputs[0], b, n.Inputs[2]], [g.UniqueName(y.Name + ".B")], new Dictionary<string, AttrValue>(n.Attributes), [y.Type])
            : g.AddNode("MatMul", "", n.Name, [first.Outputs[0], b], [g.UniqueName(y.Name + ".B")], null, [y.Type]);
        foreach (var node in new[] { first, second }) g.Nodes.Remove(node);
        g.Nodes.Insert(index, second);
        g.Nodes.Insert(index, first);
        Graph.ReplaceAllUses(y, second.Outputs[0]!);
        g.RemoveNode(n);
        if (w.Uses.Count == 0 && w.Owner.Constants.Contains(w)) w.Owner.RemoveConstant(w);
        return [first, second];
    }

    private static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'lowrank': {what}"));
}
