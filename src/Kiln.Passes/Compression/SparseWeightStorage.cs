using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Operators;
using Kiln.Runtime.Weights;

namespace Kiln.Passes;

/// <summary>
/// <c>sparse-weights{min_sparsity=0.2 min_bytes=8388608 quantized=dense skip=[…]}</c>: stores the zeros of sparse f32 weights
/// sparsely. Every product with a 2-D constant f32 weight (MatMul, kiln:MatMulAdd, Gemm: the ones <c>prune</c> and
/// <c>quantize</c> take, the classifier included) whose weight has at least <c>min_sparsity</c> exact zeros becomes a
/// <c>kiln:SparseMatMul</c> over bitmask panels (Kiln.Runtime.Weights.SparseLayout: the kept values plus one bit per
/// weight); the others keep their dense weight, and the report says why. With <c>quantized=sparse</c>, quantized
/// products (<c>kiln:QuantizedMatMul</c>, symmetric codes) become int8 codes in bitmask panels when that is fewer
/// bytes than their dense codes (<see cref="StoreCodes"/>); by default they keep their dense codes, since decoding
/// sparse int8 codes is bound by widening them, not by memory (measured on the 110m preset at 50 %: 0.93× dense int8
/// decode, 1.17× prefill, 90 MB read per token instead of 116). Lossless: the same sums, in another order.
/// <para>
/// The format saves memory traffic and costs instructions, so it pays only where decoding waits on memory. The
/// defaults are where it starts to pay on an AVX-512 CPU (2 threads): a 768×36 864 matrix-vector product beyond L3
/// measured 1.0× dense at 10 % zeros, 1.2× at 25 %, 1.9× at 50 %; a whole model whose products' weights fit in a
/// core's L2 decodes slower (stories260k, 1 MB: 0.75×), one that streams them from L3 or memory faster (the 15m
/// preset, 24 MB of layers: 1.15×; 110m: 1.4×). Below <c>min_bytes</c> of product weights in all, every layer stays dense.
/// </para>
/// Run it last: after <c>prune</c> and after any <c>quantize</c> (sparse products are not quantized).
/// </summary>
public sealed class SparseWeightStorage : IPass
{
    public string Name => "sparse-weights";

    public string Summary => "store f32 weights with enough zeros (after prune) as bitmask panels read by kiln:SparseMatMul";

    public IReadOnlyList<string> OptionNames => ["min_sparsity", "min_bytes", "quantized", "skip"];

    public void Run(PassContext ctx)
    {
        var o = ctx.Options;
        var minSparsity = o.Number("min_sparsity", 0.2, 0, 1);
        var skip = o.List("skip");
        var minBytes = o.Int("min_bytes", 8 << 20, 0);
        var sparseCodes = (o.String("quantized") ?? "dense") switch
        {
            "dense" => false,
            "sparse" => true,
            var other => throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'sparse-weights': option 'quantized' must be dense or sparse, not '{other}'")),
        };
        // Per weight and orientation (a weight read by two products is packed once); null: it stays dense.
        var done = new Dictionary<(Value, bool), (Value Masks, Value Values, Value Starts, SparseLayout Layout)?>();
        var layers = QuantizableLayers.Find(ctx.Graph).Where(l => !l.IsEmbedding).ToList();
        var quantized = ctx.Graph.Nodes.Where(n => n.QualifiedOp == KilnOp.Qualified.QuantizedMatMul && n.Inputs[1] is { Kind: ValueKind.Constant }
            && n.Inputs[2] is { Kind: ValueKind.Constant }).ToList();
        var productBytes = layers.Select(l => l.GraphWeight).Distinct().Sum(w => w.Data!.ByteLength) + quantized.Select(n => n.Inputs[1]!).Distinct().Sum(w => w.Data!.ByteLength);
        if (productBytes < minBytes)
        {
            ctx.Notes.Add($"every layer stays dense: the products' weights total {productBytes:N0} bytes, below min_bytes={minBytes}; "
                + "weights that stay in a core's cache are read faster dense");
            return;
        }
        foreach (var layer in layers)
        {
            var n = layer.Node;
            var weight = layer.GraphWeight;
            if (Glob.MatchesAny(skip, weight.Name))
            {
                ctx.Notes.Add($"{weight.Name}: skipped (skip=)");
                continue;
            }
            var rowsAreOutputs = n.QualifiedOp == "Gemm" && n.AttrInt("transB") != 0;
            if (!done.TryGetValue((weight, rowsAreOutputs), out var packed))
            {
                // [outputs, inputs], read from the layer's weight (a re-tied classifier's table: the same values).
                var data = layer.Weight.Data!;
                var (outputs, inputs) = layer.RowsAreOutputs ? ((int)data.Dims[0], (int)data.Dims[1]) : ((int)data.Dims[1], (int)data.Dims[0]);
                var rows = layer.WeightRows();
                var zeros = rows.LongCount(v => v == 0);
                var sparsity = (double)zeros / rows.Length;
                var denseBytes = 4L * rows.Length;
                if (sparsity < minSparsity || sparsity == 0)
                {
                    ctx.Layers.Add(new LayerReport(weight.Name, "f32 dense", 32, denseBytes, denseBytes, 0, null,
                        $"{sparsity:P1} zeros, below min_sparsity={minSparsity:0.###}: dense is as fast or faster"));
                    ctx.Count("dense layers (too few zeros)");
                    done[(weight, rowsAreOutputs)] = null;
                    continue;
                }
                var layout = SparseLayout.Create(outputs, inputs);
                var m = SparseWeights.Pack(rows, layout);
                var g = ctx.Graph;
                packed = (
                    g.AddConstant(g.UniqueName(weight.Name + ".masks"), ctx.Keep(TensorData.FromArray(DType.U32, [layout.Panels, inputs], m.Masks))),
                    g.AddConstant(g.UniqueName(weight.Name + ".values"), ctx.Keep(TensorData.FromArray(DType.F32, [m.Values.Length], m.Values))),
                    g.AddConstant(g.UniqueName(weight.Name + ".panel_starts"), TensorData.FromArray(DType.I32, [m.PanelStarts.Length], m.PanelStarts)),
                    layout);
                done[(weight, rowsAreOutputs)] = packed;
                var bytes = layout.TotalBytes(m.NonZeros);
                ctx.Layers.Add(new LayerReport(weight.Name, "f32 sparse panels (bitmask)", layout.BitsPerWeight(m.NonZeros), bytes, denseBytes, 0, null,
                    $"{sparsity:P1} zeros; {(double)denseBytes / bytes:0.00}× fewer bytes than dense"));
                ctx.Count("sparse layers");
            }
            if (packed is not { } p) continue;
            Rewrite(ctx.Graph, n, p.Masks, p.Values, p.Starts, null, p.Layout);
            if (weight.Uses.Count == 0 && weight.Owner.Constants.Contains(weight)) weight.Owner.RemoveConstant(weight);
        }
        if (sparseCodes)
            foreach (var n in quantized) StoreCodes(ctx, n, minSparsity, skip);
        else if (quantized.Count > 0)
            ctx.Notes.Add($"{quantized.Count} quantized products keep their dense codes (quantized=sparse stores them in int8 panels: fewer bytes and faster prefill, "
                + "but decoding them is bound by widening the codes, not by memory: 0.93× dense int8 on the 110m preset)");
    }

    /// <summary>
    /// A quantized product with symmetric codes (8 or 4 bits), at least <c>min_sparsity</c> zero codes, and fewer
    /// bytes sparse becomes int8 codes in bitmask panels. A byte per kept code plus a bit per weight is fewer bytes
    /// than dense int8 from about 30 % zeros, but than dense nibbles only beyond about 60 %: 4-bit layers pruned to
    /// 50 % stay dense, and the report says so. Asymmetric codes and W8A8 products stay dense.
    /// </summary>
    private static void StoreCodes(PassContext ctx, Node n, double minSparsity, IReadOnlyList<string>? skip)
    {
        var codes = n.Inputs[1]!;
        if (Glob.MatchesAny(skip, codes.Name))
        {
            ctx.Notes.Add($"{codes.Name}: skipped (skip=)");
            return;
        }
        var data = codes.Data!;
        var l = QuantizedLayout.Create((int)n.AttrInt("bits"), (int)data.Dims[0], (int)n.AttrInt("columns"), (int)n.AttrInt("group"), n.Inputs.Count <= 3 || n.Inputs[3] is null);
        var matrix = new QuantizedMatrix(l, data.ToArray<byte>(), n.Inputs[2]!.Data!.ToArray<Half>(), null);
        string? reason = null;
        if (!l.Symmetric) reason = "asymmetric codes (zero points) stay dense";
        else if (n.AttrInt("activation_bits") != 0 || n.Inputs.Count > 5 && n.Inputs[5] is not null) reason = "W8A8 (int8 activations) stays dense";
        long zeros = 0;
        if (l.Symmetric)
            for (var r = 0; r < l.Rows; r++)
                for (var k = 0; k < l.Columns; k++)
                    if (matrix.Code(r, k) == l.SymmetricZero) zeros++;
        var sparsity = (double)zeros / ((long)l.Rows * l.Columns);
        var sparseLayout = SparseLayout.Create(l.Rows, l.Columns, 8, l.Group);
        var sparseBytes = sparseLayout.TotalBytes((long)l.Rows * l.Columns - zeros);
        reason ??= sparsity < minSparsity || zeros == 0 ? $"{sparsity:P1} zero codes, below min_sparsity={minSparsity:0.###}"
            : sparseBytes >= l.TotalBytes ? $"{sparsity:P1} zero codes, but sparse int8 codes take {sparseBytes:N0} bytes against {l.TotalBytes:N0} dense {l.Name}"
            : null;
        if (reason is not null)
        {
            ctx.Layers.Add(new LayerReport(codes.Name, l.Name + " dense", l.BitsPerWeight, l.TotalBytes, 4L * l.Rows * l.Columns, 0, null, reason));
            ctx.Count("dense layers (too few zeros, or no fewer bytes sparse)");
            return;
        }
        var m = SparseWeights.PackCodes(matrix);
        var g = ctx.Graph;
        var masks = g.AddConstant(g.UniqueName(codes.Name + ".masks"), ctx.Keep(TensorData.FromArray(DType.U32, [sparseLayout.Panels, l.Columns], m.Masks)));
        var values = g.AddConstant(g.UniqueName(codes.Name + ".codes"), ctx.Keep(TensorData.FromArray(DType.I8, [m.Codes.Length], m.Codes)));
        var starts = g.AddConstant(g.UniqueName(codes.Name + ".panel_starts"), TensorData.FromArray(DType.I32, [m.PanelStarts.Length], m.PanelStarts));
        var scales = g.AddConstant(g.UniqueName(codes.Name + ".panel_scales"), TensorData.FromArray(DType.F32, [sparseLayout.Panels, sparseLayout.Groups, SparseLayout.Panel], m.Scales));
        ctx.Layers.Add(new LayerReport(codes.Name, $"{sparseLayout.Name} sparse panels (bitmask)", sparseLayout.BitsPerWeight(m.NonZeros), sparseBytes, 4L * l.Rows * l.Columns, 0, null,
            $"{sparsity:P1} zero codes; {(double)l.TotalBytes / sparseBytes:0.00}× fewer bytes than dense {l.Name}"));
        ctx.Count("sparse int8 layers");
        var scaleInput = n.Inputs[2]!;
        Rewrite(g, n, masks, values, starts, scales, sparseLayout);
        foreach (var old in new[] { codes, scaleInput })
            if (old.Uses.Count == 0 && old.Owner.Constants.Contains(old)) old.Owner.RemoveConstant(old);
    }

    /// <summary>Replaces the product by a kiln:SparseMatMul with the same name, bias and activation, in its place.</summary>
    private static void Rewrite(Graph g, Node n, Value masks, Value values, Value starts, Value? scales, SparseLayout layout)
    {
        var c = n.QualifiedOp switch
        {
            KilnOp.Qualified.MatMulAdd or "Gemm" when n.Inputs.Count > 2 => n.Inputs[2],
            KilnOp.Qualified.QuantizedMatMul when n.Inputs.Count > 4 => n.Inputs[4],
            _ => null,
        };
        var attrs = new Dictionary<string, AttrValue> { ["rows"] = new IntAttr(layout.Rows) };
        if (layout.Bits == 8 && layout.Group < layout.Columns) attrs["group"] = new IntAttr(layout.Group);
        if (n.Attr<StringAttr>("activation") is { Value.Length: > 0 } act) attrs["activation"] = act;
        var old = n.Outputs[0]!;
        var index = g.Nodes.IndexOf(n);
        Value?[] inputs = scales is null ? [n.Inputs[0], masks, values, starts, c] : [n.Inputs[0], masks, values, starts, c, scales];
        var fresh = g.AddNode(KilnOp.SparseMatMul, KilnOp.Domain, n.Name, inputs, [g.UniqueName(old.Name + ".sparse")], attrs, [old.Type]);
        g.Nodes.Remove(fresh);
        g.Nodes.Insert(index + 1, fresh);
        Graph.ReplaceAllUses(old, fresh.Outputs[0]!);
        g.RemoveNode(n);
    }
}
