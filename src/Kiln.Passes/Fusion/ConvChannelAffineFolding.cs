using Kiln.Ir;
using Kiln.Evaluator;
using Kiln.Runtime;
using static Kiln.Passes.Matching;

namespace Kiln.Passes;

/// <summary>
/// Conv (or a one-group ConvTranspose) followed by a per-output-channel affine map — BatchNormalization in inference
/// mode, the Mul/Add by [C,1,1] constants paddle2onnx emits for folded blocks, or an Add of such a constant (a bias
/// paddle2onnx keeps apart) — becomes one Conv with scaled weights and shifted bias: W'[o] = W[o]·s[o],
/// b'[o] = b[o]·s[o] + t[o], with s = γ/√(σ²+ε), t = β − μ·s for BatchNormalization.
/// </summary>
public sealed class ConvChannelAffineFolding : IFusionPattern
{
    public string Name => "conv-bn";

    public bool TryRewrite(Graph g, Node anchor)
    {
        if (Is(anchor, "BatchNormalization")) return FoldBatchNorm(g, anchor);
        if (Is(anchor, "Add")) return FoldMulAdd(g, anchor) || FoldAdd(g, anchor);
        return false;
    }

    /// <summary>The Conv, or one-group ConvTranspose, computing <paramref name="v"/> (read by nothing else), or null.</summary>
    private static Node? ConvOf(Value? v)
    {
        if (v is null || !Private(v)) return null;
        if (From(v, "Conv") is { } conv) return conv;
        return From(v, "ConvTranspose") is { } t && t.AttrInt("group") == 1 ? t : null;
    }

    /// <summary>The output channels of a conv's weight: axis 0 for Conv, axis 1 for ConvTranspose.</summary>
    private static long? Channels(Node conv) => conv.Inputs[1]?.Data?.Dims is { Length: >= 2 } d ? d[conv.Op == "ConvTranspose" ? 1 : 0] : null;

    private static bool FoldAdd(Graph g, Node add)
    {
        foreach (var convOut in add.Inputs)
        {
            if (ConvOf(convOut) is not { } conv || Other(add, convOut!) is not { Data: { } shift } || Channels(conv) is not { } channels) continue;
            if (PerChannel(shift, channels, Rank(convOut!)) is not { } t) continue;
            return Fold(g, conv, add, Enumerable.Repeat(1f, (int)channels).ToArray(), t);
        }
        return false;
    }

    private static bool FoldBatchNorm(Graph g, Node bn)
    {
        if (bn.Outputs.Skip(1).Any(o => o is not null) || bn.Attr<IntAttr>("training_mode") is { Value: not 0 }) return false;
        if (ConvOf(bn.Inputs[0]) is not { } conv) return false;
        var p = bn.Inputs.Skip(1).Select(v => v?.Data).ToArray();
        if (p.Any(d => d is null || d.Elem != DType.F32)) return false;
        var eps = bn.AttrFloat("epsilon");
        float[] gamma = p[0]!.ToArray<float>(), beta = p[1]!.ToArray<float>(), mean = p[2]!.ToArray<float>(), variance = p[3]!.ToArray<float>();
        var s = gamma.Select((x, i) => x / MathF.Sqrt(variance[i] + eps)).ToArray();
        var t = beta.Select((x, i) => x - mean[i] * s[i]).ToArray();
        return Fold(g, conv, bn, s, t);
    }

    private static bool FoldMulAdd(Graph g, Node add)
    {
        if (Operand(add, "Mul") is not { } m || !Private(m.Match.Outputs[0]!) || m.Other.Data is null) return false;
        var mul = m.Match;
        var convOut = mul.Inputs.FirstOrDefault(v => ConvOf(v) is not null);
        if (convOut is null || Other(mul, convOut) is not { Data: { } scale } || ConvOf(convOut) is not { } conv) return false;
        var channels = Channels(conv);
        if (channels is null || PerChannel(scale, channels.Value, Rank(convOut)) is not { } s || PerChannel(m.Other.Data, channels.Value, Rank(convOut)) is not { } t) return false;
        return Fold(g, conv, add, s, t);
    }

    /// <summary>The values of a constant that is one number per output channel of a rank-r NCHW tensor ([C,1,1], [1,C,1,1], a scalar), or null.</summary>
    private static float[]? PerChannel(TensorData d, long channels, int? rank)
    {
        if (d.Elem != DType.F32 || rank is null) return null;
        var v = d.ToArray<float>();
        if (v.Length == 1) return Enumerable.Repeat(v[0], (int)channels).ToArray();
        if (v.Length != channels || d.Dims.Length > rank) return null;
        // The channel axis is 1 of an NCHW result: the constant's dims, right-aligned, must be [C, 1, …].
        var axis = d.Dims.Length - (rank.Value - 1);
        return axis >= 0 && d.Dims[axis] == channels ? v : null;
    }

    private static bool Fold(Graph g, Node conv, Node last, float[] s, float[] t)
    {
        if (conv.Inputs[1]?.Data is not { Elem: DType.F32 } w || (conv.Inputs.Count > 2 && conv.Inputs[2] is { } b0 && b0.Data is null)) return false;
        if (Channels(conv) != s.Length || !Replaceable(last.Outputs[0]!)) return false;
        var weights = w.ToArray<float>();
        // Conv weights are [M, C/g, k…]; ConvTranspose's [C, M, k…]: output channel o's taps are every per-th block of C.
        var transposed = conv.Op == "ConvTranspose";
        var per = (int)(weights.Length / (transposed ? w.Dims[0] * s.Length : s.Length));
        for (var at = 0; at < weights.Length; at++) weights[at] *= s[transposed ? at / per % s.Length : at / per];
        var bias = conv.Inputs.Count > 2 && conv.Inputs[2]?.Data is { } bd ? bd.ToArray<float>() : new float[s.Length];
        for (var o = 0; o < s.Length; o++) bias[o] = bias[o] * s[o] + t[o];
        var wName = g.UniqueName(conv.Inputs[1]!.Name + ".folded");
        var bName = g.UniqueName((conv.Name ?? "conv") + ".bias.folded");
        var newW = g.AddConstant(wName, TensorData.FromArray(DType.F32, w.Dims, weights));
        var newB = g.AddConstant(bName, TensorData.FromArray(DType.F32, [s.Length], bias));
        Replace(g, last, last.Outputs[0]!, "", conv.Op, [conv.Inputs[0], newW, newB], new Dictionary<string, AttrValue>(conv.Attributes));
        return true;
    }
}
