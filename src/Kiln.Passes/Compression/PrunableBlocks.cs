using Kiln.Ir;
using Kiln.Ir.Ops;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>A product with a 2-D constant f32 weight [inputs, outputs]: MatMul, or kiln:MatMulAdd (whose C may be a bias or a residual).</summary>
public sealed record WeightProduct(Node Node)
{
    public Value Weight => Node.Inputs[1]!;

    public int Inputs => (int)Weight.Data!.Dims[0];

    public int Outputs => (int)Weight.Data!.Dims[1];

    /// <summary>kiln:MatMulAdd's C (a bias or a residual), or null.</summary>
    public Value? Addend => Node.QualifiedOp == KilnOp.Qualified.MatMulAdd && Node.Inputs.Count > 2 ? Node.Inputs[2] : null;

    public static WeightProduct? Of(Node? n) =>
        n is { QualifiedOp: "MatMul" or KilnOp.Qualified.MatMulAdd } && n.Inputs[1] is { Kind: ValueKind.Constant, Data: { Elem: DType.F32, Dims.Length: 2 } }
        && n.Inputs[0]?.TensorType?.Elem == DType.F32 && n.Outputs[0] is not null ? new WeightProduct(n) : null;
}

/// <summary>
/// Output columns [Offset, Offset + Width) of a product: all of them, or one part of a Split along the last axis
/// (GPT-2 computes Q, K and V with one product and splits it three ways).
/// </summary>
public sealed record ProductColumns(WeightProduct Product, int Offset, int Width, Node? Split)
{
    public Value Weight => Product.Weight;
}

/// <summary>
/// A feed-forward block: products that read one input X (up, gate) and whose outputs combine element by element
/// (SiLU, GELU, Mul, …) into the input of one output product (down). Channel j is column j of every input product's
/// weight (and bias) and row j of the output product's weight.
/// </summary>
public sealed record FeedForwardBlock(IReadOnlyList<WeightProduct> Ins, WeightProduct Out)
{
    public int Channels => Out.Inputs;

    public string Name => Out.Weight.Name;
}

/// <summary>
/// An attention block as Llama- and GPT-2-style exporters write it: query, key and value products (or the three
/// parts of one), each split into heads (Reshape [.., H·d] → [.., H, d], Transpose to [b, H, s, d], rotary embedding
/// on Q and K, keys and values appended to their past), one kiln:GroupQueryAttention, the heads merged back and the
/// output product. Query heads g·G … g·G + G − 1 share key/value head g (G = query heads / key-value heads): pruning
/// removes such groups whole.
/// </summary>
public sealed record AttentionBlock(ProductColumns Query, ProductColumns Key, ProductColumns Value, WeightProduct Out, Node Attention,
    int QueryHeads, int KvHeads, int HeadDim, IReadOnlyList<Node> Splits, Node Merge, IReadOnlyList<Value> Pasts)
{
    public int Group => QueryHeads / KvHeads;

    public string Name => Out.Weight.Name;
}

/// <summary>Finds the blocks <c>prune-structured</c> can shrink, and why other products are not such blocks.</summary>
public static class PrunableBlocks
{
    /// <summary>Feed-forward blocks in graph order, each output product once.</summary>
    public static List<FeedForwardBlock> FeedForwards(Graph g) =>
        g.Nodes.Select(WeightProduct.Of).OfType<WeightProduct>().Select(FeedForward).OfType<FeedForwardBlock>().ToList();

    private static FeedForwardBlock? FeedForward(WeightProduct down)
    {
        var f = down.Inputs;
        var ins = new List<WeightProduct>();
        var inner = new HashSet<Node>();
        bool Visit(Value v)
        {
            if (LastDim(v) != f) return false;
            if (WeightProduct.Of(v.Producer) is { } p && p.Outputs == f && (p.Addend is null || IsVector(p.Addend, f)) && p.Weight.Uses.Count == 1)
            {
                if (!ins.Contains(p)) ins.Add(p);
                return true;
            }
            if (v.Producer is not { } n || !n.Has(OpTraits.Elementwise) || n.Outputs.Length != 1 || n.Subgraphs.Any()) return false;
            inner.Add(n);
            foreach (var i in n.Inputs)
            {
                if (i is null) continue;
                if (i.Kind == ValueKind.Constant) { if (i.Data!.ElementCount != 1) return false; continue; }
                if (!Visit(i)) return false;
            }
            return true;
        }
        if (down.Weight.Uses.Count != 1 || !Visit(down.Node.Inputs[0]!) || ins.Count == 0) return null;
        // One input for every product, and nothing outside the block reads what it computes on the way.
        if (ins.Select(p => p.Node.Inputs[0]).Distinct().Count() != 1) return null;
        var region = inner.Append(down.Node).ToHashSet();
        foreach (var v in inner.Select(n => n.Outputs[0]!).Concat(ins.Select(p => p.Node.Outputs[0]!)))
            if (v.Uses.Any(u => !region.Contains(u.Node)) || v.Owner.Outputs.Any(o => o.Value == v)) return null;
        return new FeedForwardBlock(ins, down);
    }

    /// <summary>Attention blocks in graph order.</summary>
    public static List<AttentionBlock> Attentions(Graph g) =>
        g.Nodes.Where(n => n.QualifiedOp == KilnOp.Qualified.GroupQueryAttention).Select(Attention).OfType<AttentionBlock>().ToList();

    private static AttentionBlock? Attention(Node attn)
    {
        var splits = new List<Node>();
        var pasts = new List<Value>();
        ProductColumns? Trace(Value? v)
        {
            while (v is not null)
            {
                var p = v.Producer;
                if (WeightProduct.Of(p) is { } w) return w.Node.Outputs[0]!.Uses.Count == 1 && w.Weight.Uses.Count == 1 ? new ProductColumns(w, 0, w.Outputs, null) : null;
                if (p is { QualifiedOp: "Split" } && SplitPart(p, v) is { } part) return v.Uses.Count(u => u.Node.QualifiedOp != "Shape") == 1 ? part : null;
                // Every value on the way is read once (Shape reads of it aside: they follow the new head count), but the
                // present (its past with the new positions appended), which is also a graph output.
                var appended = p is not null && p.Has(OpTraits.AppendsAlongAxis);
                if (p is null || (v.Uses.Count(u => u.Node.QualifiedOp != "Shape") != 1 && !appended)) return null;
                switch (p.QualifiedOp)
                {
                    case KilnOp.Qualified.RotaryEmbedding:
                        break;
                    case "Transpose" when p.Attr<IntsAttr>("perm")?.Value is [0, 2, 1, 3]:
                        break;
                    case "Reshape" when IsSplit(p):
                        splits.Add(p);
                        break;
                    case "Concat" when appended && p.Inputs.Count == 2 && p.Inputs[0] is { Kind: ValueKind.GraphInput } past && (p.AttrInt("axis") is 2 or -2):
                        pasts.Add(past);
                        v = p.Inputs[1];
                        continue;
                    default:
                        return null;
                }
                v = p.Inputs[0];
            }
            return null;
        }
        if (attn.Inputs.Count < 3 || Trace(attn.Inputs[0]) is not { } q || Trace(attn.Inputs[1]) is not { } k || Trace(attn.Inputs[2]) is not { } v) return null;
        if (attn.Inputs[0]!.TensorType?.Shape is not { Rank: 4 } qs || attn.Inputs[1]!.TensorType?.Shape is not { Rank: 4 } ks
            || qs[1].Value is not { } hq || ks[1].Value is not { } hkv || qs[3].Value is not { } d || hkv == 0 || hq % hkv != 0) return null;
        // The output: heads back to [b, s, H, d], merged to [b, s, H·d], read by the output product.
        if (attn.Outputs[0] is not { Uses: [{ Node: { QualifiedOp: "Transpose" } t }] } || t.Attr<IntsAttr>("perm")?.Value is not [0, 2, 1, 3]
            || t.Outputs[0] is not { Uses: [{ Node: { QualifiedOp: "Reshape" } merge }] } || !IsMerge(merge)
            || merge.Outputs[0] is not { Uses: [{ Node: var o, Index: 0 }] } || WeightProduct.Of(o) is not { } output || output.Weight.Uses.Count != 1) return null;
        if (q.Width != hq * d || k.Width != hkv * d || v.Width != hkv * d || output.Inputs != hq * d) return null;
        // Three products, or the three parts of one split; a bias a product adds is cut with its columns.
        var parts = new[] { q, k, v };
        if (parts.Select(x => x.Product.Node).Distinct().Count() is var n && n != 3 && !(n == 1 && q.Split is { } s && parts.All(x => x.Split == s) && s.Outputs.Length == 3)) return null;
        if (parts.Any(x => x.Product.Addend is { } a && !IsVector(a, x.Product.Outputs))) return null;
        return new AttentionBlock(q, k, v, output, attn, (int)hq, (int)hkv, (int)d, splits, merge, pasts);
    }

    /// <summary>The columns of a product's output that one output of a Split along its last axis holds, when the Split is the product's only reader.</summary>
    private static ProductColumns? SplitPart(Node split, Value part)
    {
        // The sizes must be an input, which the rewrite can replace with the kept ones.
        if (split.Inputs[0] is not { } whole || WeightProduct.Of(whole.Producer) is not { } p || whole.Uses.Count != 1 || p.Weight.Uses.Count != 1
            || split.Inputs.Count < 2 || split.Inputs[1] is not { Kind: ValueKind.Constant }) return null;
        var axis = split.AttrInt("axis");
        if (whole.TensorType?.Shape is not { } shape || (axis != shape.Rank - 1 && axis != -1)) return null;
        var widths = split.Outputs.Select(o => o?.TensorType?.Shape is { Rank: > 0 } os ? os[os.Rank - 1].Value : null).ToList();
        if (widths.Any(w => w is null) || widths.Sum(w => w!.Value) != p.Outputs) return null;
        var index = Array.IndexOf(split.Outputs, part);
        return new ProductColumns(p, (int)widths.Take(index).Sum(w => w!.Value), (int)widths[index]!.Value, split);
    }

    /// <summary>Reshape [.., H·d] → [.., H, d], the dims before unchanged.</summary>
    private static bool IsSplit(Node r) =>
        r.Inputs[0]?.TensorType?.Shape is { } a && r.Outputs[0]?.TensorType?.Shape is { } b && b.Rank == a.Rank + 1 && b[b.Rank - 1].Value is not null
        && Enumerable.Range(0, a.Rank - 1).All(i => a[i].Equals(b[i]));

    /// <summary>Reshape [.., H, d] → [.., H·d], the dims before unchanged.</summary>
    private static bool IsMerge(Node r) =>
        r.Inputs[0]?.TensorType?.Shape is { } a && r.Outputs[0]?.TensorType?.Shape is { } b && a.Rank == b.Rank + 1
        && Enumerable.Range(0, b.Rank - 1).All(i => a[i].Equals(b[i]));

    private static long? LastDim(Value v) => v.TensorType?.Shape is { Rank: > 0 } s ? s[s.Rank - 1].Value : null;

    private static bool IsVector(Value v, int n) => v is { Kind: ValueKind.Constant, Data: { } d } && d.ElementCount == n && d.Dims.Length > 0 && d.Dims[^1] == n && d.Elem == DType.F32;
}
