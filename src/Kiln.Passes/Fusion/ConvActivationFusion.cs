using Kiln.Ir;
using static Kiln.Passes.Matching;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// Conv followed by an activation (Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Clip with constant
/// bounds) becomes <c>kiln:ConvActivation</c>: the activation runs on the Conv's output while it is in cache.
/// </summary>
public sealed class ConvActivationFusion : IFusionPattern
{
    public string Name => "conv-activation";

    public bool TryRewrite(Graph g, Node act)
    {
        if (act.Domain.Length != 0 || act.Inputs.Count == 0 || From(act.Inputs[0], "Conv") is not { } conv || !Private(act.Inputs[0]!)) return false;
        if (!IsF32(act.Inputs[0]) || !Replaceable(act.Outputs[0]!)) return false;
        float[]? parameters;
        switch (act.Op)
        {
            case "Relu" or "Sigmoid" or "Tanh" or "HardSwish": parameters = null; break;
            case "LeakyRelu": parameters = [act.AttrFloat("alpha")]; break;
            case "HardSigmoid": parameters = [act.AttrFloat("alpha"), act.AttrFloat("beta")]; break;
            case "Clip":
                var min = act.Inputs.Count > 1 && act.Inputs[1] is { } lo ? Scalar(lo) : float.MinValue;
                var max = act.Inputs.Count > 2 && act.Inputs[2] is { } hi ? Scalar(hi) : float.MaxValue;
                if (min is null || max is null) return false;
                parameters = [(float)min.Value, (float)max.Value];
                break;
            default: return false;
        }
        var attrs = new Dictionary<string, AttrValue>(conv.Attributes) { ["activation"] = new StringAttr(act.Op) };
        if (parameters is not null) attrs["activation_params"] = new FloatsAttr(parameters);
        Replace(g, act, act.Outputs[0]!, KilnOp.Domain, KilnOp.ConvActivation, conv.Inputs.ToArray(), attrs);
        return true;
    }
}
