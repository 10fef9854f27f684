using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Activations and other shape-preserving ops with attributes: Relu … Gelu, Softmax family, Dropout, CumSum, Trilu, LRN.</summary>
internal static class ActivationOps
{
    public static void Register(OpRegistry r)
    {
        var same = (ShapeRule)Rules.SameAsInput;
        OpsetAdapter legacy = ElementwiseOps.DropLegacy;
        r.Add("Relu", "X", "Y", "", same, legacy).With(OpTraits.Elementwise);
        r.Add("Sigmoid", "X", "Y", "", same, legacy).With(OpTraits.Elementwise);
        r.Add("Softplus", "X", "Y", "", same).With(OpTraits.Elementwise);
        r.Add("Softsign", "X", "Y", "", same).With(OpTraits.Elementwise);
        r.Add("Elu", "X", "Y", "alpha:float=1.0", same, legacy).With(OpTraits.Elementwise);
        r.Add("Selu", "X", "Y", "alpha:float=1.67326319217681884765625, gamma:float=1.05070102214813232421875", same, legacy).With(OpTraits.Elementwise);
        r.Add("LeakyRelu", "X", "Y", "alpha:float=0.01", same, legacy).With(OpTraits.Elementwise);
        r.Add("HardSigmoid", "X", "Y", "alpha:float=0.2, beta:float=0.5", same, legacy).With(OpTraits.Elementwise);
        r.Add("HardSwish", "X", "Y", "", same, since: 14).With(OpTraits.Elementwise);
        r.Add("ThresholdedRelu", "X", "Y", "alpha:float=1.0", same, since: 10).With(OpTraits.Elementwise);
        r.Add("Celu", "X", "Y", "alpha:float=1.0", same, since: 12).With(OpTraits.Elementwise);
        r.Add("Shrink", "input", "output", "bias:float=0.0, lambd:float=0.5", same, since: 9).With(OpTraits.Elementwise);
        r.Add("Mish", "X", "Y", "", same, since: 18).With(OpTraits.Elementwise);
        r.Add("Gelu", "X", "Y", "approximate:string=none", same, since: 20).With(OpTraits.Elementwise);
        foreach (var op in new[] { "Softmax", "LogSoftmax", "Hardmax" })
            r.Add(op, "input", "output", "axis:int=-1", same, SoftmaxAdapter);
        r.Add("Dropout", "data, ratio?, training_mode?", "output, mask?", "seed:int?", c =>
        {
            c.Set(0, c.InputType(0));
            c.Set(1, DType.Bool, c.ShapeOf(0));
        }, DropoutAdapter);
        r.Add("LRN", "X", "Y", "alpha:float=0.0001, beta:float=0.75, bias:float=1.0, size:int!", same);
        r.Add("CumSum", "x, axis", "y", "exclusive:int=0, reverse:int=0", same, since: 11);
        r.Add("Trilu", "input, k?", "output", "upper:int=1", same, since: 14);
        r.Add("MeanVarianceNormalization", "X", "Y", "axes:ints=[0,2,3]", same, since: 9);
        r.Add("LpNormalization", "input", "output", "axis:int=-1, p:int=2", same);
    }

    /// <summary>
    /// Before opset 13 the Softmax family flattened the input to 2-D at <c>axis</c> (default 1) and normalized rows.
    /// That equals the canonical per-axis form when axis is the last dim; otherwise it becomes Flatten → op → Reshape.
    /// </summary>
    private static void SoftmaxAdapter(AdapterContext c)
    {
        if (c.Opset >= 13) return;
        var axis = c.Take<IntAttr>("axis")?.Value ?? 1;
        var rank = (c.Input(0)?.Type as TensorType)?.Rank;
        if (rank is { } rk && (axis == rk - 1 || axis == -1))
        {
            c.Attributes["axis"] = new IntAttr(-1);
            return;
        }
        var x = c.Input(0);
        var shape = c.Emit("Shape", [x]);
        var flat = c.Emit("Flatten", [x], new() { ["axis"] = new IntAttr(axis) });
        var normalized = c.Emit(c.Op, [flat[0]], new() { ["axis"] = new IntAttr(-1) });
        c.Emit("Reshape", [normalized[0], shape[0]], names: [c.OutputNames[0]]);
        c.Handled = true;
    }

    /// <summary>Dropout's ratio became an input in opset 12; is_test went away in opset 7.</summary>
    private static void DropoutAdapter(AdapterContext c)
    {
        ElementwiseOps.DropLegacy(c);
        c.Attributes.Remove("is_test");
        if (c.Take<FloatAttr>("ratio") is { } ratio)
            c.SetInput(1, c.FloatConstant([ratio.Value], "ratio", scalar: true));
    }
}
