using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// GELU as PyTorch exports it becomes <c>kiln:GELU(x)</c>: the exact form x · ½ · (1 + Erf(x / √2)) (the division
/// written as Div(√2) or Mul(1/√2)), and the tanh approximation GPT-2 uses, x · ½ · (1 + Tanh(√(2/π) · (x + 0.044715 ·
/// x³))) (x³ as Pow(x, 3) or two Muls), which becomes <c>kiln:GELU{approximate="tanh"}</c>. The ½ may come first or last.
/// </summary>
public sealed class GeluFusion : IFusionPattern
{
    public string Name => "gelu";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (!Is(anchor, "Mul") || !Replaceable(anchor.Outputs[0]!) || !IsF32(anchor.Outputs[0])) return false;
        // Form A: Mul(Mul(x, 1 + f(x)), 0.5). Form B: Mul(Mul(x, 0.5), 1 + f(x)); f is Erf(x/√2) or Tanh(√(2/π)(x + 0.044715x³)).
        foreach (var (left, right) in new[] { (anchor.Inputs[0]!, anchor.Inputs[1]!), (anchor.Inputs[1]!, anchor.Inputs[0]!) })
        {
            if (IsScalar(right, 0.5) && From(left, "Mul") is { } inner && Private(left))
                foreach (var (x, onePlus) in new[] { (inner.Inputs[0]!, inner.Inputs[1]!), (inner.Inputs[1]!, inner.Inputs[0]!) })
                    if (OnePlus(onePlus, x) is { } tanhA) return Rewrite(g, anchor, x, tanhA);
            if (From(left, "Mul") is { } half && Private(left))
                foreach (var (x, h) in new[] { (half.Inputs[0]!, half.Inputs[1]!), (half.Inputs[1]!, half.Inputs[0]!) })
                    if (IsScalar(h, 0.5) && OnePlus(right, x) is { } tanhB) return Rewrite(g, anchor, x, tanhB);
        }
        return false;
    }

    private static bool Rewrite(Graph g, Node anchor, Value x, bool tanh)
    {
        Replace(g, anchor, anchor.Outputs[0]!, KilnOp.Domain, KilnOp.Gelu, [x],
            tanh ? new Dictionary<string, AttrValue> { ["approximate"] = new StringAttr("tanh") } : null);
        return true;
    }

    /// <summary>Whether v = 1 + Erf(x/√2) (false) or 1 + Tanh(√(2/π)(x + 0.044715x³)) (true); null when neither.</summary>
    private static bool? OnePlus(Value v, Value x)
    {
        if (From(v, "Add") is not { } add || !Private(v)) return null;
        if (Operand(add, "Erf") is { } e && IsScalar(e.Other, 1) && Private(e.Match.Outputs[0]!) && e.Match.Inputs[0] is { } erfArg)
            return IsScaledBy(erfArg, x, 1 / Math.Sqrt(2), divisor: Math.Sqrt(2)) ? false : null;
        if (Operand(add, "Tanh") is { } t && IsScalar(t.Other, 1) && Private(t.Match.Outputs[0]!) && t.Match.Inputs[0] is { } tanhArg
            && From(tanhArg, "Mul") is { } scale && Private(tanhArg))
            foreach (var (c, cubic) in new[] { (scale.Inputs[0], scale.Inputs[1]), (scale.Inputs[1], scale.Inputs[0]) })
                if (IsScalar(c, Math.Sqrt(2 / Math.PI), 1e-4) && IsCubicTerm(cubic, x)) return true;
        return null;
    }

    /// <summary>Whether v = x · factor (a Mul) or x / divisor (a Div), used only here.</summary>
    private static bool IsScaledBy(Value v, Value x, double factor, double divisor)
    {
        if (!Private(v)) return false;
        if (From(v, "Div") is { } div) return div.Inputs[0] == x && IsScalar(div.Inputs[1], divisor, 1e-4);
        if (From(v, "Mul") is { } mul)
            foreach (var (a, b) in new[] { (mul.Inputs[0], mul.Inputs[1]), (mul.Inputs[1], mul.Inputs[0]) })
                if (a == x && IsScalar(b, factor, 1e-4)) return true;
        return false;
    }

    /// <summary>Whether v = x + 0.044715 · x³.</summary>
    private static bool IsCubicTerm(Value? v, Value x)
    {
        if (v is null || !Private(v) || From(v, "Add") is not { } add || Other(add, x) is not { } term || !Private(term) || From(term, "Mul") is not { } mul) return false;
        foreach (var (c, cube) in new[] { (mul.Inputs[0], mul.Inputs[1]), (mul.Inputs[1], mul.Inputs[0]) })
            if (IsScalar(c, 0.044715, 1e-4) && IsCube(cube, x)) return true;
        return false;
    }

    /// <summary>Whether v = x³: Pow(x, 3), or Mul(x, Mul(x, x)) in either order.</summary>
    private static bool IsCube(Value? v, Value x)
    {
        if (v is null || !Private(v)) return false;
        if (From(v, "Pow") is { } pow) return pow.Inputs[0] == x && IsScalar(pow.Inputs[1], 3);
        if (From(v, "Mul") is not { } mul || Other(mul, x) is not { } square || !Private(square)) return false;
        return From(square, "Mul") is { } sq && sq.Inputs[0] == x && sq.Inputs[1] == x;
    }
}
