using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Misc family: the less common ops (EyeLike, losses, window functions, StringNormalizer, NonMaxSuppression). The ops are declared in Kiln.Ir/Ops/MiscOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterMisc(Dictionary<string, Action<OpContext>> d)
    {
        d["EyeLike"] = c =>
        {
            var x = c.In(0);
            var type = c.ElemAttr("dtype", x.Type);
            var k = c.Int("k");
            var v = new double[x.Length];
            for (var i = 0; i < x.Shape[0]; i++)
            {
                var j = i + k;
                if (j >= 0 && j < x.Shape[1]) v[i * x.Shape[1] + j] = 1;
            }
            c.Set(0, Movement.FromDoubles(type, x.Shape, v));
        };
        d["NegativeLogLikelihoodLoss"] = c =>
            c.Set(0, Losses.Nll(c.In(0), c.In(1), c.Opt(2), c.Str("reduction"), c.Has("ignore_index") ? c.Int("ignore_index") : null));
        d["SoftmaxCrossEntropyLoss"] = c =>
        {
            var (loss, logProb) = Losses.SoftmaxCrossEntropy(c.In(0), c.In(1), c.Opt(2), c.Str("reduction"), c.Has("ignore_index") ? c.Int("ignore_index") : null);
            c.Set(0, loss);
            if (c.OutputCount > 1) c.Set(1, logProb);
        };
        foreach (var w in new[] { "HannWindow", "HammingWindow", "BlackmanWindow" })
        {
            var kind = w;
            d[kind] = c => c.Set(0, Special.Window(kind, c.In(0).GetLong(0), c.Int("periodic") != 0, c.ElemAttr("output_datatype", DType.F32)));
        }
        d["StringNormalizer"] = c =>
            c.Set(0, Special.StringNormalizer(c.In(0), c.Str("case_change_action"), c.Int("is_case_sensitive") != 0, c.Strings("stopwords") ?? []));
        d["NonMaxSuppression"] = c =>
            c.Set(0, Special.NonMaxSuppression(c.In(0), c.In(1), c.Opt(2) is { Length: > 0 } m ? m.GetLong(0) : 0,
                c.Opt(3) is { Length: > 0 } iou ? iou.GetDouble(0) : 0, c.Opt(4) is { Length: > 0 } st ? st.GetDouble(0) : null, c.Int("center_point_box") != 0));
    }
}
