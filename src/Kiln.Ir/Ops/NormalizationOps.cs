using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization.</summary>
internal static class NormalizationOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("BatchNormalization", "X, scale, B, input_mean, input_var", "Y, running_mean?, running_var?",
            "epsilon:float=0.00001, momentum:float=0.9, training_mode:int=0", c =>
            {
                c.Set(0, c.InputType(0));
                c.Set(1, c.InputType(3));
                c.Set(2, c.InputType(4));
            }, c =>
            {
                // spatial (opset < 9) and is_test (opset < 7) only described how the op was used, not what it computes.
                ElementwiseOps.DropLegacy(c);
                c.Attributes.Remove("is_test");
                if (c.Take<IntAttr>("spatial") is { Value: 0 }) throw c.Fail("BatchNormalization with spatial=0 is not supported");
            });
        r.Add("InstanceNormalization", "input, scale, B", "output", "epsilon:float=0.00001", Rules.SameAsInput, ElementwiseOps.DropLegacy);
        r.Add("LayerNormalization", "X, Scale, B?", "Y, Mean?, InvStdDev?", "axis:int=-1, epsilon:float=0.00001, stash_type:int=1", c =>
        {
            c.Set(0, c.InputType(0));
            var s = c.ShapeOf(0);
            if (s is null) { c.Set(1, DType.F32, (Shape?)null); c.Set(2, DType.F32, (Shape?)null); return; }
            var axis = c.Axis(c.Int("axis"), s.Rank);
            var stats = s.Dims.Select((d, i) => i < axis ? d : Dim.One).ToArray();
            var statElem = OnnxElementCodes.FromCode((int)c.Int("stash_type")) ?? DType.F32;
            c.Set(1, statElem, stats);
            c.Set(2, statElem, stats);
        }, since: 17);
        r.Add("GroupNormalization", "X, scale, bias", "Y", "epsilon:float=0.00001, num_groups:int!, stash_type:int=1", Rules.SameAsInput, since: 18);
    }
}
