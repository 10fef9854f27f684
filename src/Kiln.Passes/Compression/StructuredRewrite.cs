using Kiln.Ir;
using Kiln.Ir.Inference;
using Kiln.Ir.Ops;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// The graph edits of <c>prune-structured</c>: weights cut to the kept columns or rows, head splits that no longer
/// name a head count, a decoder's past keys and values resized, bias compensation, and the types inferred again.
/// </summary>
internal static class StructuredRewrite
{
    /// <summary>The product keeps only the given output columns of its weight (and of a bias vector it adds).</summary>
    public static void KeepColumns(PassContext ctx, WeightProduct p, int[] keep)
    {
        var w = p.Weight.Data!.ToArray<float>();
        int rows = p.Inputs, cols = p.Outputs;
        var cut = new float[(long)rows * keep.Length];
        for (var i = 0; i < rows; i++)
            for (var j = 0; j < keep.Length; j++) cut[(long)i * keep.Length + j] = w[(long)i * cols + keep[j]];
        Replace(ctx, p.Node, 1, TensorData.FromArray(DType.F32, [rows, keep.Length], cut), ".pruned");
        if (p.Addend is { Kind: ValueKind.Constant, Data: { } b })
        {
            var bias = b.ToArray<float>();
            var dims = b.Dims.ToArray();
            dims[^1] = keep.Length;
            Replace(ctx, p.Node, 2, TensorData.FromArray(DType.F32, dims, keep.Select(j => bias[j]).ToArray()), ".pruned");
        }
    }

    /// <summary>The product keeps only the given input rows of its weight.</summary>
    public static void KeepRows(PassContext ctx, WeightProduct p, int[] keep)
    {
        var w = p.Weight.Data!.ToArray<float>();
        var cols = p.Outputs;
        var cut = new float[(long)keep.Length * cols];
        for (var r = 0; r < keep.Length; r++) w.AsSpan(keep[r] * cols, cols).CopyTo(cut.AsSpan(r * cols));
        Replace(ctx, p.Node, 1, TensorData.FromArray(DType.F32, [keep.Length, cols], cut), ".pruned");
    }

    private static void Replace(PassContext ctx, Node node, int input, TensorData data, string suffix)
    {
        var old = node.Inputs[input]!;
        var fresh = ctx.Graph.AddConstant(ctx.Graph.UniqueName(old.Name + suffix), ctx.Keep(data));
        node.SetInput(input, fresh);
        if (old.Uses.Count == 0 && old.Owner.Constants.Contains(old)) old.Owner.RemoveConstant(old);
    }

    /// <summary>A Split along the last axis takes new part sizes.</summary>
    public static void SplitSizes(PassContext ctx, Node split, long[] sizes) =>
        Replace(ctx, split, 1, TensorData.Int64([sizes.Length], sizes), ".pruned");

    /// <summary>
    /// Head splits [.., H·d] → [.., H, d] and the merge back read their target shape from a constant that keeps the
    /// leading dims (0) and infers the head count (−1), so they hold for any number of heads.
    /// </summary>
    public static void SplitHeadsAnyCount(PassContext ctx, IEnumerable<Node> splits, Node merge, int headDim)
    {
        void Target(Node reshape, long[] shape)
        {
            var c = ctx.Graph.AddConstant(ctx.Graph.UniqueName((reshape.Name ?? "reshape") + "/heads"), TensorData.Int64([shape.Length], shape));
            var old = reshape.Inputs[1]!;
            reshape.SetInput(1, c);
            reshape.Attributes["allowzero"] = new IntAttr(0);
            if (old.Kind == ValueKind.Constant && old.Uses.Count == 0) old.Owner.RemoveConstant(old);
        }
        foreach (var s in splits)
        {
            var rank = s.Inputs[0]!.TensorType!.Shape!.Rank;
            Target(s, [.. Enumerable.Repeat(0L, rank - 1), -1, headDim]);
        }
        Target(merge, [.. Enumerable.Repeat(0L, merge.Outputs[0]!.TensorType!.Shape!.Rank - 1), -1]);
    }

    /// <summary>A decoder's past keys or values [b, H, past, d] (and the presents they become) take <paramref name="heads"/> heads.</summary>
    public static void ResizePasts(Graph g, IEnumerable<Value> pasts, int heads)
    {
        static IrType WithHeads(IrType t, int heads) => t is TensorType { Shape: { Rank: 4 } s } tt
            ? tt with { Shape = new Shape(s.Dims.Select((d, i) => i == 1 ? Dim.Const(heads) : d)) } : t;
        foreach (var past in pasts)
        {
            past.Type = WithHeads(past.Type, heads);
            foreach (var use in past.Uses.Where(u => u.Node.Has(OpTraits.AppendsAlongAxis)))
                foreach (var o in g.Outputs.Where(o => o.Value == use.Node.Outputs[0]))
                    o.DeclaredType = WithHeads(o.DeclaredType, heads);
        }
    }

    /// <summary>Types inferred again over the smaller shapes, and the shape arithmetic nothing reads any more removed.</summary>
    public static void Finish(PassContext ctx)
    {
        ShapeInference.RunAndCollectKnown(ctx.Graph);
        new DeadCodeElimination().Run(new PassContext(ctx.Model, PassOptions.None("dce")));
    }

    /// <summary>
    /// Adds <paramref name="bias"/> to what the product computes: into a constant C of a kiln:MatMulAdd, added to a
    /// computed C (a residual) before the product, or added to a MatMul's output. The product node stays; returns
    /// what undoes the change.
    /// </summary>
    public static Action AddBias(PassContext ctx, Node product, float[] bias, string name)
    {
        var g = ctx.Graph;
        if (product.QualifiedOp == KilnOp.Qualified.MatMulAdd && product.Inputs.Count > 2 && product.Inputs[2] is { } c)
        {
            if (c is { Kind: ValueKind.Constant, Data: { } cd } && cd.ElementCount == bias.Length)
            {
                var sum = cd.ToArray<float>().Select((v, i) => v + bias[i]).ToArray();
                var merged = g.AddConstant(g.UniqueName(c.Name + ".compensated"), TensorData.FromArray(DType.F32, cd.Dims.ToArray(), sum));
                product.SetInput(2, merged);
                return () =>
                {
                    product.SetInput(2, c);
                    g.RemoveConstant(merged);
                };
            }
            var (added, b) = Add(g, product, c, bias, name, before: true);
            product.SetInput(2, added.Outputs[0]);
            return () =>
            {
                product.SetInput(2, c);
                g.RemoveNode(added);
                g.RemoveConstant(b);
            };
        }
        var y = product.Outputs[0]!;
        var readers = y.Uses.ToList();
        var outputs = g.Outputs.Where(o => o.Value == y).ToList();
        var (after, bc) = Add(g, product, y, bias, name, before: false);
        foreach (var u in readers) u.Node.SetInput(u.Index, after.Outputs[0]);
        foreach (var o in outputs) o.Value = after.Outputs[0]!;
        return () =>
        {
            foreach (var u in readers) u.Node.SetInput(u.Index, y);
            foreach (var o in outputs) o.Value = y;
            g.RemoveNode(after);
            g.RemoveConstant(bc);
        };
    }

    /// <summary>A node Add(x, bias) placed right before or after <paramref name="product"/>.</summary>
    private static (Node Add, Value Bias) Add(Graph g, Node product, Value x, float[] bias, string name, bool before)
    {
        var b = g.AddConstant(g.UniqueName(name + ".compensation"), TensorData.FromArray(DType.F32, [bias.Length], bias));
        var add = g.AddNode("Add", "", product.Name is null ? null : product.Name + "/compensation", [x, b], [g.UniqueName(x.Name + ".compensated")], null, [x.Type]);
        g.Nodes.Remove(add);
        g.Nodes.Insert(g.Nodes.IndexOf(product) + (before ? 0 : 1), add);
        return (add, b);
    }

    /// <summary>2 · inputs · outputs summed over the products with 2-D constant f32 weights (those <c>quantize</c> takes, the classifier among them): their FLOPs per token.</summary>
    public static long ProductFlopsPerToken(Graph g) =>
        QuantizableLayers.Find(g).Where(l => !l.IsEmbedding).Sum(l => 2L * l.Node.Inputs[1]!.Data!.ElementCount);
}
