using Kiln.Ir;
using static Kiln.Passes.Matching;

namespace Kiln.Passes;

/// <summary>
/// x · Clip(x + 3, 0, 6) / 6 (hard swish spelled out, as paddle2onnx exports MobileNetV3) becomes ONNX
/// <c>HardSwish(x)</c>: one pass over the data instead of four, and a Conv before it can then absorb it.
/// </summary>
public sealed class HardSwishFusion : IFusionPattern
{
    public string Name => "hardswish";

    public bool TryRewrite(Graph g, Node anchor)
    {
        // Div(·, 6) or Mul(·, 1/6) at the end.
        Node? product;
        if (Is(anchor, "Div") && IsScalar(anchor.Inputs[1], 6)) product = From(anchor.Inputs[0], "Mul");
        else if (Is(anchor, "Mul") && Operand(anchor, "Mul") is { } m && IsScalar(m.Other, 1.0 / 6, 1e-4)) product = m.Match;
        else return false;
        if (product is null || !IsF32(anchor.Outputs[0]) || !Replaceable(anchor.Outputs[0]!) || !Private(product.Outputs[0]!)) return false;
        if (Operand(product, "Clip") is not { } c) return false;
        var (clip, x) = c;
        if (!Private(clip.Outputs[0]!) || clip.Inputs.Count < 3 || !IsScalar(clip.Inputs[1], 0) || !IsScalar(clip.Inputs[2], 6)) return false;
        if (From(clip.Inputs[0], "Add") is not { } add || !Private(add.Outputs[0]!) || Other(add, x) is not { } three || !IsScalar(three, 3)) return false;
        Replace(g, anchor, anchor.Outputs[0]!, "", "HardSwish", [x]);
        return true;
    }
}
