using Kiln.Ir;
using static Kiln.Passes.Matching;

namespace Kiln.Passes;

/// <summary>
/// LayerNorm spelled out as older exporters write it — d = x − mean(x, -1); d / √(mean(d², -1) + ε) · γ (+ β) —
/// becomes the ONNX <c>LayerNormalization(x, γ, β){axis=-1, epsilon}</c>, one kernel pass over each row.
/// </summary>
public sealed class LayerNormFusion : IFusionPattern
{
    public string Name => "layernorm";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (!IsF32(anchor.Outputs[0]) || !Replaceable(anchor.Outputs[0]!)) return false;
        Node? scale = null;
        Value? beta = null;
        if (Is(anchor, "Add") && Operand(anchor, "Mul") is { } m && IsVector(m.Other) && Private(m.Match.Outputs[0]!))
        {
            scale = m.Match;
            beta = m.Other;
        }
        else if (Is(anchor, "Mul"))
        {
            // Leave a Mul whose only use adds a bias to the Add anchor, which takes both.
            var o = anchor.Outputs[0]!;
            if (o.Uses.Count == 1 && Is(o.Uses[0].Node, "Add") && Other(o.Uses[0].Node, o) is { } b && IsVector(b)) return false;
            scale = anchor;
        }
        if (scale is null) return false;
        foreach (var (normed, gamma) in new[] { (scale.Inputs[0]!, scale.Inputs[1]!), (scale.Inputs[1]!, scale.Inputs[0]!) })
        {
            if (!IsVector(gamma) || From(normed, "Div") is not { } div || !Private(normed)) continue;
            var diff = div.Inputs[0]!;
            if (From(diff, "Sub") is not { } sub || From(sub.Inputs[1], "ReduceMean") is not { } mean || mean.Inputs[0] != sub.Inputs[0] || !LastAxis(mean)) continue;
            var x = sub.Inputs[0]!;
            if (Epsilon(div.Inputs[1]!, diff) is not { } eps) continue;
            var n = x.TensorType?.Shape is { Rank: > 0 } s ? s[s.Rank - 1].Value : null;
            if (n != gamma.Data!.Dims[0] || (beta is not null && beta.Data!.Dims[0] != n)) continue;
            Replace(g, anchor, anchor.Outputs[0]!, "", "LayerNormalization", beta is null ? [x, gamma] : [x, gamma, beta],
                new() { ["axis"] = new IntAttr(-1), ["epsilon"] = new FloatAttr((float)eps) });
            return true;
        }
        return false;
    }

    private static bool IsVector(Value v) => v.Data is { Dims.Length: 1, Elem: DType.F32 };

    private static bool LastAxis(Node mean) =>
        mean.Attr<IntAttr>("keepdims") is not { Value: 0 } && Ints(mean.Inputs.ElementAtOrDefault(1)) is [var a]
        && (a == -1 || a == Rank(mean.Inputs[0]) - 1);

    /// <summary>ε when <paramref name="root"/> = √(mean(d², -1) + ε) of this d (d² as Pow(d, 2) or Mul(d, d)).</summary>
    private static double? Epsilon(Value root, Value d)
    {
        if (From(root, "Sqrt") is not { } sqrt || !Private(root) || From(sqrt.Inputs[0], "Add") is not { } add || !Private(sqrt.Inputs[0]!)) return null;
        if (Operand(add, "ReduceMean") is not { } rm || Scalar(rm.Other) is not { } eps || !LastAxis(rm.Match) || !Private(rm.Match.Outputs[0]!)) return null;
        var sq = rm.Match.Inputs[0];
        if (sq is null || !Private(sq)) return null;
        var ok = From(sq, "Pow") is { } pow && pow.Inputs[0] == d && IsScalar(pow.Inputs[1], 2)
            || From(sq, "Mul") is { } mul && mul.Inputs[0] == d && mul.Inputs[1] == d;
        return ok ? eps : null;
    }
}
