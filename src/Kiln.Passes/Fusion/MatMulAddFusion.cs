using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// MatMul by a 2-D constant weight followed by an Add that does not grow the product (a bias, or a residual
/// connection) — and an activation after it (Relu, Sigmoid, Tanh, kiln SiLU/GELU) — becomes
/// <c>kiln:MatMulAdd(A, W, C){activation}</c>: the product accumulates into C's values in one pass.
/// </summary>
public sealed class MatMulAddFusion : IFusionPattern
{
    public string Name => "matmul-add";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (!Is(anchor, "Add") || !IsF32(anchor.Outputs[0]) || Operand(anchor, "MatMul") is not { } m) return false;
        var matmul = m.Match;
        if (!Private(matmul.Outputs[0]!) || matmul.Inputs[1]?.Data is not { Dims.Length: 2 } || Rank(matmul.Inputs[0]) is not >= 2) return false;
        // C must broadcast into the product without growing it.
        if (!SameShape(anchor.Outputs[0]!, matmul.Outputs[0]!)) return false;
        var output = anchor.Outputs[0]!;
        var activation = "";
        var last = anchor;
        if (output.Uses.Count == 1 && Replaceable(output) && output.Uses[0].Node is var next && next.Inputs.Count == 1
            && (Is(next, "Relu") || Is(next, "Sigmoid") || Is(next, "Tanh") || next.Domain == KilnOp.Domain && next.Op is KilnOp.SiLU or KilnOp.Gelu && next.Attr<StringAttr>("approximate") is null))
        {
            activation = next.Op;
            last = next;
        }
        if (!Replaceable(last.Outputs[0]!)) return false;
        var attrs = new Dictionary<string, AttrValue>();
        if (activation.Length > 0) attrs["activation"] = new StringAttr(activation);
        Replace(g, last, last.Outputs[0]!, KilnOp.Domain, KilnOp.MatMulAdd, [matmul.Inputs[0], matmul.Inputs[1], m.Other], attrs);
        return true;
    }
}
