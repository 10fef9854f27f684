using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Recurrent family: recurrent layers (RNN, GRU, LSTM). The ops are declared in Kiln.Ir/Ops/RecurrentOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterRecurrent(Dictionary<string, Action<OpContext>> d)
    {
        foreach (var kind in new[] { "RNN", "GRU", "LSTM" })
        {
            var k = kind;
            d[k] = c =>
            {
                var o = new RecurrentOptions(c.Str("direction"), c.Has("hidden_size") ? (int)c.Int("hidden_size") : 0, c.Strings("activations") ?? [],
                    c.Floats("activation_alpha") ?? [], c.Floats("activation_beta") ?? [], c.Has("clip") ? c.Float("clip") : null,
                    k == "GRU" && c.Int("linear_before_reset") != 0, k == "LSTM" && c.Int("input_forget") != 0, (int)c.Int("layout"));
                var (y, yh, yc) = Recurrent.Run(k, c.In(0), c.In(1), c.In(2), c.Opt(3), c.Opt(4), c.Opt(5),
                    k == "LSTM" ? c.Opt(6) : null, k == "LSTM" ? c.Opt(7) : null, o);
                c.Set(0, y);
                if (c.OutputCount > 1) c.Set(1, yh);
                if (c.OutputCount > 2) c.Set(2, yc);
            };
        }
    }
}
