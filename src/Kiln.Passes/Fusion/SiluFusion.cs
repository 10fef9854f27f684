using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>x · Sigmoid(x) (SiLU / swish, as in SwiGLU feed-forward layers) becomes <c>kiln:SiLU(x)</c>.</summary>
public sealed class SiluFusion : IFusionPattern
{
    public string Name => "silu";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (!Is(anchor, "Mul") || !Replaceable(anchor.Outputs[0]!) || !IsF32(anchor.Outputs[0]) || Operand(anchor, "Sigmoid") is not { } m) return false;
        if (m.Match.Inputs[0] != m.Other || !Private(m.Match.Outputs[0]!)) return false;
        Replace(g, anchor, anchor.Outputs[0]!, KilnOp.Domain, KilnOp.SiLU, [m.Other]);
        return true;
    }
}
