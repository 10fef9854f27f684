using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Weights;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// <c>quantize{bits=4 group=32 sym=true method=rtn embedding=8 skip=[…]}</c>: weight-only quantization. Every product
/// with a 2-D constant weight (MatMul, kiln:MatMulAdd, Gemm with alpha = beta = 1) becomes
/// <c>kiln:QuantizedMatMul(A, codes, scales[, zero_points][, C])</c>, and every embedding lookup (Gather on axis 0
/// of a 2-D constant table) becomes <c>kiln:QuantizedGather</c>. A table that is both an embedding and a classifier
/// (a tied Gemm(h, E, transB=1)) is quantized once and read by both.
/// <para>
/// Options: <c>bits</c> 4 or 8; <c>group</c> inputs per scale (32, 64, 128, …, default 32; 0 = one per output
/// channel); <c>sym</c> symmetric codes, or asymmetric with u8 zero points; <c>method</c> rtn (round to nearest), gptq or awq
/// (both need calibration data); <c>embedding</c> the format of embedding tables and of the classifier (the weight
/// whose product is a graph output): <c>8</c> (int8 in groups of 32, the default for 4-bit passes: the tied table is read
/// every token, and 8 bits keep its error an order below the 4-bit layers'), <c>same</c> (as the other layers) or
/// <c>f32</c> (leave it); <c>skip</c> initializer names or globs to leave in f32.
/// </para>
/// </summary>
public sealed class Quantize : IPass
{
    public string Name => "quantize";

    public string Summary => "weight-only int8/int4 quantization (rtn, gptq, awq) of products with constant weights and of embedding tables";

    public IReadOnlyList<string> OptionNames => ["bits", "group", "sym", "method", "embedding", "skip", "damp", "act-order", "block"];

    public bool Compresses => true;

    public void Run(PassContext ctx) => Run(ctx, null);

    /// <summary>
    /// Quantizes; with <paramref name="pruner"/> (a <c>prune</c> step just before this one, see
    /// <see cref="Prune.SharesWalkWith"/>) each layer is first pruned on the same calibration inputs, and the
    /// quantizer starts from the pruned values (GPTQ keeps their zeros).
    /// </summary>
    public void Run(PassContext ctx, LayerPruner? pruner)
    {
        var o = ctx.Options;
        var bits = (int)o.OneOf("bits", 4, 4, 8);
        var group = (int)o.Int("group", 32, 0, 1 << 20);
        if (group != 0 && group % QuantizedLayout.Block != 0) throw Bad($"option 'group' must be 0 (per channel) or a multiple of {QuantizedLayout.Block}, not {group}");
        var symmetric = o.Bool("sym", true);
        var method = o.String("method") ?? "rtn";
        var embedding = o.String("embedding") ?? (bits == 4 ? "8" : "same");
        if (embedding is not ("8" or "same" or "f32")) throw Bad($"option 'embedding' must be 8, same or f32, not '{embedding}'");
        var skip = o.List("skip");
        IWeightQuantizer quantizer = method switch
        {
            "rtn" => new RoundToNearest(),
            "gptq" => new Gptq(o),
            "awq" => new Awq(),
            _ => throw Bad($"option 'method' must be rtn, gptq or awq, not '{method}'"),
        };
        // GPTQ's options given to another method would be ignored: refuse them instead.
        if (method != "gptq")
            foreach (var key in new[] { "damp", "act-order", "block" })
                if (o.String(key) is not null) throw Bad($"option '{key}' applies to method=gptq only");

        var layers = QuantizableLayers.Find(ctx.Graph);
        // What the layers read before they are rewritten: a re-tied classifier reads a transposed copy that then goes.
        var graphWeights = layers.Select(l => l.GraphWeight).ToList();
        var done = new Dictionary<(Value Weight, bool Transposed), QuantizedConstants>();
        var count = 0;
        var embeddingTables = layers.Where(l => l.IsEmbedding || l.IsClassifier).Select(l => l.Weight).ToHashSet();
        var toPrune = pruner is null ? [] : layers.Where(pruner.Includes).ToHashSet();
        long transient = 0;

        // Quantizes one layer (once per weight and orientation) and rewrites it; returns the nodes that now compute it.
        IReadOnlyList<Node> Handle(QuantizableLayer layer, CalibrationWalk.LayerInputs? x)
        {
            count++;
            var weight = layer.Weight;
            // A tied classifier is skipped by its own weight's name too (the transposed copy it reads in the graph).
            if (Glob.MatchesAny(skip, weight.Name) || Glob.MatchesAny(skip, layer.GraphWeight.Name))
            {
                ctx.Notes.Add($"{weight.Name}: skipped (skip=)");
                if (toPrune.Contains(layer)) pruner!.PruneInGraph(layer, x);
                return [layer.Node];
            }
            var head = embeddingTables.Contains(weight);
            if (head && embedding == "f32")
            {
                ctx.Notes.Add($"{weight.Name}: kept in f32 (embedding=f32)");
                if (toPrune.Contains(layer)) pruner!.PruneInGraph(layer, x);
                return [layer.Node];
            }
            var (layerBits, layerGroup, layerSym) = head && embedding == "8" ? (8, 32, true) : (bits, group, symmetric);
            if (!done.TryGetValue((weight, layer.RowsAreOutputs), out var q))
            {
                var (rows, columns) = layer.RowsAreOutputs ? ((int)weight.Data!.Dims[0], (int)weight.Data.Dims[1]) : ((int)weight.Data!.Dims[1], (int)weight.Data.Dims[0]);
                var layout = QuantizedLayout.Create(layerBits, rows, columns, layerGroup, layerSym);
                var w = layer.WeightRows();
                if (toPrune.Contains(layer)) w = pruner!.PruneRows(layer, w, x) ?? w;
                ctx.Report($"layer {count}/{layers.Count} {weight.Name} ({layout.Name})");
                // Tables read as embeddings, and layers without calibration inputs, are rounded to the nearest.
                var result = head || x is null ? new QuantizedLayerResult(QuantizedWeights.Pack(w, layout), null) : quantizer.Quantize(w, layout, x);
                q = QuantizedConstants.Add(ctx, weight, result);
                done[(weight, layer.RowsAreOutputs)] = q;
                var deq = result.Matrix.Dequantize();
                if (result.InputScale is { } inScale)
                    for (var r = 0; r < rows; r++)
                        for (var k = 0; k < columns; k++) deq[r * columns + k] /= inScale[k];
                double? outputError = x is not null && !layer.IsEmbedding ? OutputError(x, w, deq, rows) : null;
                ctx.Layers.Add(new LayerReport(weight.Name, layout.Name, layout.BitsPerWeight, layout.TotalBytes, 4L * rows * columns, RelativeError(w, deq), outputError,
                    (layout.HasPartialGroup ? $"last group of each row {columns % layout.Group} wide; " : "") + (result.InputScale is null ? "" : "input scaled (AWQ); ")
                    + (head ? "embedding/classifier" : "")));
                ctx.Count($"int{layerBits} layers");
                // The float weight has been read for the last time here (its codes replace it).
                weight.Data.ReleaseResident();
                // Each layer leaves float copies of its weight (rows, dequantized) on the large-object heap, which the
                // GC collects when it sees fit: on a 1B model that garbage reached gigabytes. With a spill (the codes
                // already in mapped files), collecting every 512 MB holds the pass near one layer's copies.
                transient += 12L * rows * columns;
                if (ctx.Spill is not null && transient >= 512L << 20)
                {
                    GC.Collect();
                    transient = 0;
                }
            }
            return layer.Rewrite(ctx.Graph, q);
        }

        if (quantizer.NeedsCalibration && ctx.Calibration is null)
            throw Bad($"method={method} needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");
        // With calibration inputs every method runs on the walk, so the report has each layer's output error.
        if (ctx.Calibration is { } data)
        {
            var byNode = layers.ToDictionary(l => l.Node);
            CalibrationWalk.Run(ctx, data, byNode.Keys.Where(n => !byNode[n].IsEmbedding).ToHashSet(), (node, x) => Handle(byNode[node], x));
            foreach (var l in layers.Where(l => l.IsEmbedding)) Handle(l, null);
        }
        else
        {
            foreach (var layer in layers) Handle(layer, null);
        }
        pruner?.Finish();
        // The last layers' float copies go before the next stage (emission, the Roslyn check) allocates its own.
        if (ctx.Spill is not null) GC.Collect();
        // Float weights nothing reads any more go (a tied classifier's transposed copy among them).
        foreach (var weight in done.Keys.Select(k => k.Weight).Concat(graphWeights).Distinct())
            if (weight.Uses.Count == 0 && weight.Owner.Constants.Contains(weight)) weight.Owner.RemoveConstant(weight);
    }

    /// <summary>‖X·Wᵀ − X·Ŵᵀ‖ / ‖X·Wᵀ‖ on (up to 512 of) the calibration tokens.</summary>
    public static double OutputError(CalibrationWalk.LayerInputs x, float[] w, float[] q, int rows)
    {
        var k = x.Columns;
        var tokens = Math.Min(x.Tokens, 512);
        double num = 0, den = 0;
        for (var t = 0; t < tokens; t++)
        {
            var xr = x.X.AsSpan(t * k, k);
            for (var r = 0; r < rows; r++)
            {
                double a = 0, b = 0;
                for (var j = 0; j < k; j++) { a += (double)xr[j] * w[r * k + j]; b += (double)xr[j] * q[r * k + j]; }
                num += (a - b) * (a - b);
                den += a * a;
            }
        }
        return den == 0 ? 0 : Math.Sqrt(num / den);
    }

    private static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'quantize': {what}"));

    /// <summary>‖W − Ŵ‖ / ‖W‖ (Frobenius).</summary>
    public static double RelativeError(ReadOnlySpan<float> w, ReadOnlySpan<float> q)
    {
        double num = 0, den = 0;
        for (var i = 0; i < w.Length; i++)
        {
            var d = (double)w[i] - q[i];
            num += d * d;
            den += (double)w[i] * w[i];
        }
        return den == 0 ? 0 : Math.Sqrt(num / den);
    }
}

/// <summary>
/// A quantized layer: the matrix, and for methods that rescale input channels (AWQ) the factors s the weight columns
/// were multiplied by before quantizing; the layer's input is divided by them (W·x = (W·diag s)·(x / s)).
/// </summary>
public sealed record QuantizedLayerResult(QuantizedMatrix Matrix, float[]? InputScale);

/// <summary>How a method turns one layer's weights (rows = output channels) into a quantized matrix.</summary>
public interface IWeightQuantizer
{
    /// <summary>Whether the method needs the layer's input activations.</summary>
    bool NeedsCalibration { get; }

    QuantizedLayerResult Quantize(float[] rows, QuantizedLayout layout, CalibrationWalk.LayerInputs x);
}

/// <summary>Round to nearest: each group's scale from its largest magnitude (or its range, asymmetric).</summary>
public sealed class RoundToNearest : IWeightQuantizer
{
    public bool NeedsCalibration => false;

    public QuantizedLayerResult Quantize(float[] rows, QuantizedLayout layout, CalibrationWalk.LayerInputs x) => new(QuantizedWeights.Pack(rows, layout), null);
}

/// <summary>The constants a quantized matrix becomes in the graph, named after the float weight.</summary>
public sealed record QuantizedConstants(QuantizedLayout Layout, Value Codes, Value Scales, Value? Zeros, Value? InputScale)
{
    public static QuantizedConstants Add(PassContext ctx, Value weight, QuantizedLayerResult result)
    {
        var g = ctx.Graph;
        var m = result.Matrix;
        var l = m.Layout;
        string Name(string suffix) => g.UniqueName($"{weight.Name}.{suffix}");
        var codes = g.AddConstant(Name($"q{l.Bits}"), ctx.Keep(new MemoryTensorData(DType.U8, [l.Rows, l.RowBytes], m.Codes)));
        var scales = g.AddConstant(Name("scales"), TensorData.FromArray(DType.F16, [l.Rows, l.Groups], m.Scales));
        var zeros = m.Zeros is null ? null : g.AddConstant(Name("zeros"), new MemoryTensorData(DType.U8, [l.Rows, l.Groups], m.Zeros));
        var inverse = result.InputScale?.Select(v => 1f / v).ToArray();
        var inputScale = inverse is null ? null : g.AddConstant(Name("input_scale"), TensorData.FromArray(DType.F32, [l.Columns], inverse));
        return new QuantizedConstants(l, codes, scales, zeros, inputScale);
    }

    public Dictionary<string, AttrValue> Attributes() => new()
    {
        ["bits"] = new IntAttr(Layout.Bits),
        ["group"] = new IntAttr(Layout.Group),
        ["columns"] = new IntAttr(Layout.Columns),
    };
}

/// <summary>A node that reads a 2-D constant weight in a way quantization can rewrite.</summary>
public sealed record QuantizableLayer(Node Node, Value Weight, bool RowsAreOutputs, bool IsEmbedding, bool IsClassifier)
{
    /// <summary>The weight the node reads in the graph: <see cref="Weight"/>, or for a re-tied classifier the transposed copy it replaces.</summary>
    public Value GraphWeight => Node.Inputs[IsEmbedding ? 0 : 1]!;

    /// <summary>The weight as [outputs, inputs] floats (transposed from MatMul's [inputs, outputs]).</summary>
    public float[] WeightRows()
    {
        var d = Weight.Data!;
        if (RowsAreOutputs) return d.ToArray<float>();
        // Transposed straight from the weight's bytes (often a mapped file): one copy, not two.
        var w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(d.Bytes);
        int k = (int)d.Dims[0], n = (int)d.Dims[1];
        var t = new float[w.Length];
        for (var i = 0; i < k; i++)
            for (var j = 0; j < n; j++) t[j * k + i] = w[i * n + j];
        return t;
    }

    /// <summary>Replaces the node by its quantized form (same name, same output value's uses); returns the new nodes in order.</summary>
    public IReadOnlyList<Node> Rewrite(Graph g, QuantizedConstants q)
    {
        var n = Node;
        var index = g.Nodes.IndexOf(n);
        var added = new List<Node>();
        Node Insert(string op, Value?[] inputs, string outName, IrType type, Dictionary<string, AttrValue>? attrs, string? name)
        {
            var node = g.AddNode(op, op == "Mul" ? "" : KilnOp.Domain, name, inputs, [g.UniqueName(outName)], attrs, [type]);
            g.Nodes.Remove(node);
            g.Nodes.Insert(index + 1 + added.Count, node);
            added.Add(node);
            return node;
        }
        var attrs = q.Attributes();
        Value?[] inputs;
        string op;
        if (IsEmbedding)
        {
            op = KilnOp.QuantizedGather;
            inputs = [q.Codes, q.Scales, q.Zeros, n.Inputs[1]];
        }
        else
        {
            op = KilnOp.QuantizedMatMul;
            var c = n.QualifiedOp is KilnOp.Qualified.MatMulAdd or "Gemm" && n.Inputs.Count > 2 ? n.Inputs[2] : null;
            var x = n.Inputs[0]!;
            if (q.InputScale is { } s)
                x = Insert("Mul", [x, s], x.Name + ".scaled", x.Type, null, n.Name is null ? null : n.Name + "/input_scale").Outputs[0]!;
            inputs = [x, q.Codes, q.Scales, q.Zeros, c];
            if (n.Attr<StringAttr>("activation") is { Value.Length: > 0 } act) attrs["activation"] = act;
        }
        var old = n.Outputs[0]!;
        var fresh = Insert(op, inputs, old.Name + ".q", old.Type, attrs, n.Name);
        Graph.ReplaceAllUses(old, fresh.Outputs[0]!);
        g.RemoveNode(n);
        return added;
    }
}

/// <summary>Finds the nodes <see cref="Quantize"/> (and the other weight passes) can rewrite.</summary>
public static class QuantizableLayers
{
    public static List<QuantizableLayer> Find(Graph g)
    {
        var outputs = OutputsThroughViews(g);
        var layers = new List<QuantizableLayer>();
        foreach (var n in g.Nodes)
        {
            if (n.Outputs.Length != 1 || n.Outputs[0] is not { } y || y.TensorType?.Elem != DType.F32) continue;
            var w = n.Inputs.Count > 1 ? n.Inputs[1] : null;
            var classifier = outputs.Contains(y);
            switch (n.QualifiedOp)
            {
                case "MatMul" or KilnOp.Qualified.MatMulAdd when IsWeight(n.Inputs[1]) && n.Inputs[0]?.TensorType?.Elem == DType.F32:
                    layers.Add(new QuantizableLayer(n, w!, false, false, classifier));
                    break;
                case "Gemm" when IsWeight(n.Inputs[1]) && n.AttrInt("transA") == 0
                    && n.AttrFloat("alpha") == 1f && n.AttrFloat("beta") == 1f:
                    layers.Add(new QuantizableLayer(n, w!, n.AttrInt("transB") != 0, false, classifier));
                    break;
                case "Gather" when IsWeight(n.Inputs[0]) && n.AttrInt("axis") == 0:
                    layers.Add(new QuantizableLayer(n, n.Inputs[0]!, true, true, false));
                    break;
            }
        }
        return Retie(layers);
    }

    /// <summary>
    /// The graph's outputs and the values they are views of (Reshape, Squeeze, Unsqueeze, Flatten, Identity): a
    /// classifier is the product that computes the logits, however the exporter reshaped them afterwards.
    /// </summary>
    private static HashSet<Value> OutputsThroughViews(Graph g)
    {
        var found = new HashSet<Value>();
        var pending = new Stack<Value>(g.Outputs.Select(o => o.Value));
        while (pending.TryPop(out var v))
        {
            if (!found.Add(v)) continue;
            if (v.Producer is { QualifiedOp: "Reshape" or "Squeeze" or "Unsqueeze" or "Flatten" or "Identity" } p && p.Inputs.Count > 0 && p.Inputs[0] is { } source)
                pending.Push(source);
        }
        return found;
    }

    /// <summary>
    /// A product whose weight is the transpose of an embedding table (the classifier of a tied model, once fold has
    /// materialized Transpose(E)) is quantized as the table itself, rows as outputs: both read one set of codes, and
    /// the documented format of embeddings and classifier applies to it.
    /// </summary>
    private static List<QuantizableLayer> Retie(List<QuantizableLayer> layers)
    {
        var tables = layers.Where(l => l.IsEmbedding).Select(l => l.Weight).Distinct().ToList();
        if (tables.Count == 0) return layers;
        return layers.Select(l =>
        {
            if (l.IsEmbedding || l.RowsAreOutputs || tables.Contains(l.Weight)) return l;
            var table = tables.FirstOrDefault(t => IsTransposeOf(l.Weight.Data!, t.Data!));
            return table is null ? l : l with { Weight = table, RowsAreOutputs = true, IsClassifier = true };
        }).ToList();
    }

    /// <summary>Whether <paramref name="w"/> [k, n] holds exactly the transpose of <paramref name="table"/> [n, k], bit for bit.</summary>
    private static bool IsTransposeOf(TensorData w, TensorData table)
    {
        if (w.Dims[0] != table.Dims[1] || w.Dims[1] != table.Dims[0]) return false;
        var a = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(w.Bytes);
        var b = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(table.Bytes);
        int k = (int)w.Dims[0], n = (int)w.Dims[1];
        for (var i = 0; i < k; i++)
            for (var j = 0; j < n; j++)
                if (a[i * n + j] != b[j * k + i]) return false;
        return true;
    }

    private static bool IsWeight(Value? v) => v is { Kind: ValueKind.Constant, Data: { Elem: DType.F32, Dims.Length: 2 } d } && d.Dims[0] > 0 && d.Dims[1] > 0;
}
