using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Normalization family: normalizations (BatchNormalization, InstanceNormalization, GroupNormalization, LayerNormalization). The ops are declared in Kiln.Ir/Ops/NormalizationOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterNormalization(Dictionary<string, Action<OpContext>> d)
    {
        d["BatchNormalization"] = c =>
        {
            var x = c.In(0);
            var eps = c.Float("epsilon");
            var scale = c.In(1).ToDoubles();
            var bias = c.In(2).ToDoubles();
            var mean = c.In(3).ToDoubles();
            var var = c.In(4).ToDoubles();
            if (c.Int("training_mode") != 0)
            {
                var (bm, bv) = Normalization.ChannelStats(x);
                var momentum = c.Float("momentum");
                c.Set(0, Normalization.ChannelAffine(x, bm, bv, scale, bias, eps));
                if (c.WantsOutput(1)) c.Set(1, Movement.FromDoubles(c.In(3).Type, c.In(3).Shape, mean.Select((m, i) => m * momentum + bm[i] * (1 - momentum)).ToArray()));
                if (c.WantsOutput(2)) c.Set(2, Movement.FromDoubles(c.In(4).Type, c.In(4).Shape, var.Select((v, i) => v * momentum + bv[i] * (1 - momentum)).ToArray()));
                return;
            }
            c.Set(0, Normalization.ChannelAffine(x, mean, var, scale, bias, eps));
        };
        d["InstanceNormalization"] = c =>
        {
            var x = c.In(0);
            var n = x.Shape[0];
            var ch = x.Shape[1];
            var (y, _, _) = Normalization.LayerNorm(x.Reshape([n * ch, (int)(x.Length / Math.Max(1, n * ch))]), 1, c.Float("epsilon"), null, null);
            var shape = new int[x.Rank];
            Array.Fill(shape, 1);
            shape[1] = ch;
            var s = c.In(1).Reshape(shape);
            var b = c.In(2).Reshape(shape);
            c.Set(0, E.Numeric<E.AddOp>(E.Numeric<E.MulOp>(y.Reshape(x.Shape), s), b));
        };
        d["GroupNormalization"] = c =>
        {
            var x = c.In(0);
            var groups = (int)c.Int("num_groups");
            var n = x.Shape[0];
            var ch = x.Shape[1];
            var (y, _, _) = Normalization.LayerNorm(x.Reshape([n * groups, (int)(x.Length / Math.Max(1, n * groups))]), 1, c.Float("epsilon"), null, null);
            var shape = new int[x.Rank];
            Array.Fill(shape, 1);
            shape[1] = ch;
            var scale = c.In(1);
            var bias = c.In(2);
            if (scale.Length != ch)
            {
                // Opset 18 form: one scale per group.
                scale = Movement.Expand(scale.Reshape([groups, 1]), [groups, ch / groups]).Reshape([ch]);
                bias = Movement.Expand(bias.Reshape([groups, 1]), [groups, ch / groups]).Reshape([ch]);
            }
            c.Set(0, E.Numeric<E.AddOp>(E.Numeric<E.MulOp>(y.Reshape(x.Shape), scale.Reshape(shape)), bias.Reshape(shape)));
        };
        d["LayerNormalization"] = c =>
        {
            var x = c.In(0);
            var axis = Movement.NormalizeAxis(c.Int("axis"), x.Rank, "LayerNormalization");
            var (y, mean, inv) = Normalization.LayerNorm(x, axis, c.Float("epsilon"), c.In(1), c.Opt(2));
            c.Set(0, y);
            if (c.WantsOutput(1)) c.Set(1, mean);
            if (c.WantsOutput(2)) c.Set(2, inv);
        };
    }
}
