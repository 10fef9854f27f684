using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// The exact GELU as PyTorch exports it — x · ½ · (1 + Erf(x / √2)), with the ½ applied first or last and the
/// division written as Div(√2) or Mul(1/√2) — becomes <c>kiln:GELU(x)</c>.
/// </summary>
public sealed class GeluFusion : IFusionPattern
{
    public string Name => "gelu";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (!Is(anchor, "Mul") || !Replaceable(anchor.Outputs[0]!) || !IsF32(anchor.Outputs[0])) return false;
        // Form A: Mul(Mul(x, Add(Erf(x/√2), 1)), 0.5). Form B: Mul(Mul(x, 0.5), Add(Erf(x/√2), 1)).
        foreach (var (left, right) in new[] { (anchor.Inputs[0]!, anchor.Inputs[1]!), (anchor.Inputs[1]!, anchor.Inputs[0]!) })
        {
            if (IsScalar(right, 0.5) && From(left, "Mul") is { } inner && Private(left))
                foreach (var (x, onePlus) in new[] { (inner.Inputs[0]!, inner.Inputs[1]!), (inner.Inputs[1]!, inner.Inputs[0]!) })
                    if (IsOnePlusErf(onePlus, x)) return Rewrite(g, anchor, x);
            if (From(left, "Mul") is { } half && Private(left) && IsOnePlusErf(right, null))
                foreach (var (x, h) in new[] { (half.Inputs[0]!, half.Inputs[1]!), (half.Inputs[1]!, half.Inputs[0]!) })
                    if (IsScalar(h, 0.5) && IsOnePlusErf(right, x)) return Rewrite(g, anchor, x);
        }
        return false;
    }

    private static bool Rewrite(Graph g, Node anchor, Value x)
    {
        Replace(g, anchor, anchor.Outputs[0]!, KilnOp.Domain, KilnOp.Gelu, [x]);
        return true;
    }

    /// <summary>Whether v = 1 + Erf(x/√2) (x null: any x).</summary>
    private static bool IsOnePlusErf(Value v, Value? x)
    {
        if (From(v, "Add") is not { } add || !Private(v) || Operand(add, "Erf") is not { } e || !IsScalar(e.Other, 1) || !Private(e.Match.Outputs[0]!)) return false;
        var arg = e.Match.Inputs[0];
        if (arg is null || !Private(arg)) return false;
        if (From(arg, "Div") is { } div) return (x is null || div.Inputs[0] == x) && IsScalar(div.Inputs[1], Math.Sqrt(2), 1e-4);
        if (From(arg, "Mul") is { } mul)
            foreach (var (a, b) in new[] { (mul.Inputs[0], mul.Inputs[1]), (mul.Inputs[1], mul.Inputs[0]) })
                if ((x is null || a == x) && IsScalar(b, 1 / Math.Sqrt(2), 1e-4)) return true;
        return false;
    }
}
