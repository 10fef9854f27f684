using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// RMSNorm as exporters write it — x · 1/√(mean(x², last axis) + ε) · scale, with x² as Pow(x, 2) or Mul(x, x)
/// and the inverse as Div(1, Sqrt) or Reciprocal(Sqrt) — becomes <c>kiln:RMSNorm(x, scale)</c>.
/// </summary>
public sealed class RmsNormFusion : IFusionPattern
{
    public string Name => "rmsnorm";

    public bool TryRewrite(Graph g, Node anchor)
    {
        // anchor = Mul(scale, normalized) with scale a 1-D constant over the last axis
        if (!Is(anchor, "Mul") || !Replaceable(anchor.Outputs[0]!) || !IsF32(anchor.Outputs[0])) return false;
        foreach (var (scale, normalized) in Pairs(anchor))
        {
            if (scale.Data is not { Dims.Length: 1 } || From(normalized, "Mul") is not { } mul || !Private(normalized)) continue;
            foreach (var (x, inverse) in Pairs(mul))
            {
                if (!Private(inverse) || Epsilon(inverse, x) is not { } eps) continue;
                var last = x.TensorType?.Shape is { Rank: > 0 } s ? s[s.Rank - 1].Value : null;
                if (last != scale.Data.Dims[0]) continue;
                Replace(g, anchor, anchor.Outputs[0]!, KilnOp.Domain, KilnOp.RmsNorm, [x, scale], new() { ["epsilon"] = new FloatAttr((float)eps) });
                return true;
            }
        }
        return false;
    }

    private static IEnumerable<(Value, Value)> Pairs(Node n) =>
        n.Inputs.Count == 2 && n.Inputs[0] is { } a && n.Inputs[1] is { } b ? [(a, b), (b, a)] : [];

    /// <summary>ε when <paramref name="inverse"/> = 1/√(mean(x², -1) + ε) of this x, else null.</summary>
    private static double? Epsilon(Value inverse, Value x)
    {
        Value? root;
        if (From(inverse, "Div") is { } div && IsScalar(div.Inputs[0], 1)) root = div.Inputs[1];
        else if (From(inverse, "Reciprocal") is { } rec) root = rec.Inputs[0];
        else return null;
        if (From(root, "Sqrt") is not { } sqrt || !Private(root!) || From(sqrt.Inputs[0], "Add") is not { } add || !Private(sqrt.Inputs[0]!)) return null;
        if (Operand(add, "ReduceMean") is not { } rm || Scalar(rm.Other) is not { } eps || !Private(rm.Match.Outputs[0]!)) return null;
        var mean = rm.Match;
        var rank = Rank(x);
        if (rank is null || mean.Attr<IntAttr>("keepdims") is { Value: 0 } || Ints(mean.Inputs.ElementAtOrDefault(1)) is not [var axis] || (axis != -1 && axis != rank - 1)) return null;
        var squared = mean.Inputs[0];
        if (squared is null || !Private(squared)) return null;
        var ok = From(squared, "Pow") is { } pow && pow.Inputs[0] == x && IsScalar(pow.Inputs[1], 2)
            || From(squared, "Mul") is { } sq && sq.Inputs[0] == x && sq.Inputs[1] == x;
        return ok ? eps : null;
    }
}
