using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// Rotary position embedding on interleaved pairs as the Llama exporter writes it — x viewed as [..., d/2, 2],
/// x0 = pair[0], x1 = pair[1], then (x0·cos − x1·sin, x0·sin + x1·cos) stacked back to [..., d] — becomes
/// <c>kiln:RotaryEmbedding(x, cos, sin){interleaved=1}</c>.
/// </summary>
public sealed class RotaryEmbeddingFusion : IFusionPattern
{
    public string Name => "rope";

    public bool TryRewrite(Graph g, Node anchor)
    {
        // anchor = Reshape(Concat(Unsqueeze(re, -1), Unsqueeze(im, -1), axis=-1), back to x's shape)
        if (!Is(anchor, "Reshape") || !Replaceable(anchor.Outputs[0]!) || From(anchor.Inputs[0], "Concat") is not { } cat) return false;
        // Besides the Reshape, only Shape nodes may read the stacked pairs (exporters take the reshape target from it).
        var stacked = anchor.Inputs[0]!;
        if (!Replaceable(stacked) || stacked.Uses.Any(u => u.Node != anchor && !Is(u.Node, "Shape"))) return false;
        if (cat.Inputs.Count != 2 || Rank(cat.Outputs[0]) is not { } rank || !IsLastAxis(cat.Attr<IntAttr>("axis")?.Value, rank)) return false;
        var re = Unsqueezed(cat.Inputs[0], rank);
        var im = Unsqueezed(cat.Inputs[1], rank);
        if (re is null || im is null || From(re, "Sub") is not { } sub || From(im, "Add") is not { } add || !Private(re) || !Private(im)) return false;
        // re = x0·cos − x1·sin, im = x0·sin + x1·cos
        if (Products(sub) is not { } p1 || Products(add) is not { } p2) return false;
        var (x0cos, x1sin) = p1;
        Value? x0 = null, x1 = null, cos = null, sin = null;
        foreach (var (a, b) in Orders(x0cos))
            foreach (var (c, d) in Orders(x1sin))
                if (Halves(a, c) is { } pair) { (x0, x1) = pair; cos = b; sin = d; }
        if (x0 is null || x1 is null || cos is null || sin is null) return false;
        var ok = Orders(p2.Item1).Any(o => o.Item1 == x0 && o.Item2 == sin) && Orders(p2.Item2).Any(o => o.Item1 == x1 && o.Item2 == cos)
            || Orders(p2.Item1).Any(o => o.Item1 == x1 && o.Item2 == cos) && Orders(p2.Item2).Any(o => o.Item1 == x0 && o.Item2 == sin);
        if (!ok) return false;
        var pairs = From(x0, "Gather")!.Inputs[0]!;
        if (From(pairs, "Reshape") is not { } view || view.Inputs[0] is not { } x || !SameShape(x, anchor.Outputs[0]!) || !IsF32(x)) return false;
        if (Rank(cos) is not { } cr || cos!.TensorType!.Shape![cr - 1].Value is not { } half || x.TensorType!.Shape! is not { Rank: > 0 } xs || xs[xs.Rank - 1].Value != 2 * half) return false;
        if (!SameShape(pairs, stacked)) return false;
        foreach (var use in stacked.Uses.Where(u => u.Node != anchor).ToList()) use.Node.SetInput(use.Index, pairs);
        Replace(g, anchor, anchor.Outputs[0]!, KilnOp.Domain, KilnOp.RotaryEmbedding, [x, cos, sin], new() { ["interleaved"] = new IntAttr(1) });
        return true;
    }

    private static bool IsLastAxis(long? axis, int rank) => axis == -1 || axis == rank - 1;

    private static Value? Unsqueezed(Value? v, int rank) =>
        From(v, "Unsqueeze") is { } u && Ints(u.Inputs.ElementAtOrDefault(1)) is [var a] && IsLastAxis(a, rank) && Private(v!) ? u.Inputs[0] : null;

    /// <summary>The two products a Sub/Add combines, when both are private Muls.</summary>
    private static (Node, Node)? Products(Node n) =>
        From(n.Inputs[0], "Mul") is { } a && From(n.Inputs[1], "Mul") is { } b && Private(n.Inputs[0]!) && Private(n.Inputs[1]!) ? (a, b) : null;

    private static IEnumerable<(Value, Value)> Orders(Node mul) => [(mul.Inputs[0]!, mul.Inputs[1]!), (mul.Inputs[1]!, mul.Inputs[0]!)];

    /// <summary>(x0, x1) when a and b are Gather(pairs, 0/1, axis=-1) of one pair view.</summary>
    private static (Value, Value)? Halves(Value a, Value b)
    {
        if (From(a, "Gather") is not { } ga || From(b, "Gather") is not { } gb || ga.Inputs[0] != gb.Inputs[0]) return null;
        if (Rank(ga.Inputs[0]) is not { } r || !IsLastAxis(ga.AttrInt("axis"), r) || !IsLastAxis(gb.AttrInt("axis"), r)) return null;
        if (ga.Inputs[0]!.TensorType!.Shape![r - 1].Value != 2) return null;
        return Scalar(ga.Inputs[1]) == 0 && Scalar(gb.Inputs[1]) == 1 ? (a, b) : null;
    }
}
