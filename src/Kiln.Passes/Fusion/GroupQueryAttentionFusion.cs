using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// Scaled dot-product attention over a KV cache as exporters write it — Softmax(Q·Kᵀ·scale + mask)·V, where K and V
/// may be repeated for groups of query heads (Unsqueeze → Expand → Reshape, "repeat_kv") — becomes
/// <c>kiln:GroupQueryAttention(Q, K, V, mask){scale}</c> over the un-repeated K and V: no [b, heads, t, d] copies.
/// </summary>
public sealed class GroupQueryAttentionFusion : IFusionPattern
{
    public string Name => "attention";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (!Is(anchor, "MatMul") || !Replaceable(anchor.Outputs[0]!) || From(anchor.Inputs[0], "Softmax") is not { } softmax || !Private(anchor.Inputs[0]!)) return false;
        if (Rank(anchor.Outputs[0]) != 4 || !IsF32(anchor.Outputs[0]) || softmax.Attr<IntAttr>("axis")?.Value is not (-1 or 3)) return false;
        var scores = softmax.Inputs[0]!;
        Value? mask = null;
        if (From(scores, "Add") is { } add && Private(scores))
        {
            if (Operand(add, "Mul") is { } m) { mask = m.Other; scores = m.Match.Outputs[0]!; }
            else if (Operand(add, "Div") is { } d) { mask = d.Other; scores = d.Match.Outputs[0]!; }
            else if (Operand(add, "MatMul") is { } mm) { mask = mm.Other; scores = mm.Match.Outputs[0]!; }
            else return false;
        }
        double scale = 1;
        if (From(scores, "Mul") is { } mul && Private(scores))
        {
            var s = Scalar(mul.Inputs[1]) ?? Scalar(mul.Inputs[0]);
            if (s is null) return false;
            scale = s.Value;
            scores = Scalar(mul.Inputs[1]) is not null ? mul.Inputs[0]! : mul.Inputs[1]!;
        }
        else if (From(scores, "Div") is { } div && Private(scores) && Scalar(div.Inputs[1]) is { } divisor)
        {
            scale = 1 / divisor;
            scores = div.Inputs[0]!;
        }
        if (From(scores, "MatMul") is not { } qk || !Private(scores)) return false;
        var q = qk.Inputs[0]!;
        if (From(qk.Inputs[1], "Transpose") is not { } kt || !Private(qk.Inputs[1]!) || kt.Attr<IntsAttr>("perm")?.Value is not [0, 1, 3, 2]) return false;
        var k = Unrepeated(kt.Inputs[0]!);
        var v = Unrepeated(anchor.Inputs[1]!);
        if (k is null || v is null || Rank(q) != 4 || Rank(k) != 4 || Rank(v) != 4) return false;
        var heads = q.TensorType!.Shape![1].Value;
        var kvHeads = k.TensorType!.Shape![1].Value;
        if (heads is null || kvHeads is null || kvHeads == 0 || heads % kvHeads != 0 || v.TensorType!.Shape![1].Value != kvHeads) return false;
        if (mask is not null && (Rank(mask) is not { } mr || mr > 4 || !IsF32(mask))) return false;
        Replace(g, anchor, anchor.Outputs[0]!, KilnOp.Domain, KilnOp.GroupQueryAttention, [q, k, v, mask], new() { ["scale"] = new FloatAttr((float)scale) });
        return true;
    }

    /// <summary>The K or V before a repeat_kv (Reshape(Expand(Unsqueeze(x, 2)))), or the value itself when it is not repeated.</summary>
    private static Value? Unrepeated(Value kv)
    {
        if (From(kv, "Reshape") is not { } reshape) return kv;
        if (From(reshape.Inputs[0], "Expand") is not { } expand || From(expand.Inputs[0], "Unsqueeze") is not { } unsqueeze) return kv;
        if (Ints(unsqueeze.Inputs.ElementAtOrDefault(1)) is not [2]) return null;
        var x = unsqueeze.Inputs[0]!;
        // Expand must only repeat the new axis: [b, kvh, 1, t, d] → [b, kvh, rep, t, d] → [b, kvh·rep, t, d].
        var from = x.TensorType?.Shape;
        var expanded = expand.Outputs[0]!.TensorType?.Shape;
        var result = kv.TensorType?.Shape;
        if (from is not { Rank: 4 } || expanded is not { Rank: 5 } || result is not { Rank: 4 }) return null;
        if (!expanded[0].SameAs(from[0]) || !expanded[1].SameAs(from[1]) || !expanded[3].SameAs(from[2]) || !expanded[4].SameAs(from[3]) || expanded[2].Value is null) return null;
        return result[1].Value == from[1].Value * expanded[2].Value ? x : null;
    }
}
