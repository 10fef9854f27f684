using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>RNN, GRU, LSTM.</summary>
internal static class RecurrentOps
{
    private const string Common = "activation_alpha:floats?, activation_beta:floats?, activations:strings?, clip:float?, direction:string=forward, hidden_size:int?, layout:int=0";

    public static void Register(OpRegistry r)
    {
        r.Add("RNN", "X, W, R, B?, sequence_lens?, initial_h?", "Y?, Y_h?", Common, c => Rule(c, hasCell: false), Adapter);
        r.Add("GRU", "X, W, R, B?, sequence_lens?, initial_h?", "Y?, Y_h?", Common + ", linear_before_reset:int=0", c => Rule(c, hasCell: false), Adapter);
        r.Add("LSTM", "X, W, R, B?, sequence_lens?, initial_h?, initial_c?, P?", "Y?, Y_h?, Y_c?", Common + ", input_forget:int=0", c => Rule(c, hasCell: true), Adapter);
    }

    /// <summary>Opsets before 7 had an output_sequence attribute; outputs present or absent say the same now.</summary>
    private static void Adapter(AdapterContext c)
    {
        ElementwiseOps.DropLegacy(c);
        c.Attributes.Remove("output_sequence");
    }

    private static void Rule(InferenceContext c, bool hasCell)
    {
        var elem = c.Elem(0);
        var x = c.ShapeOf(0);
        var w = c.ShapeOf(1);
        var batchwise = c.Int("layout") != 0;
        var dirs = c.Str("direction") == "bidirectional" ? 2 : 1;
        Dim hidden = c.OptInt("hidden_size") is { } h ? h : Dim.Unknown;
        if (hidden.IsUnknown && c.ShapeOf(2) is { } rs) hidden = rs[2];
        if (x is null) { for (var i = 0; i < 3; i++) c.Set(i, elem, (Shape?)null); return; }
        if (x.Rank != 3) throw c.Fail($"X must be rank 3, not {x}");
        if (w is not null && w[0].Value is { } wd && wd != dirs) throw c.Fail($"W has {wd} directions but direction needs {dirs}");
        var (seq, batch) = batchwise ? (x[1], x[0]) : (x[0], x[1]);
        Dim d = dirs;
        c.Set(0, elem, batchwise ? [batch, seq, d, hidden] : [seq, d, batch, hidden]);
        Dim[] state = batchwise ? [batch, d, hidden] : [d, batch, hidden];
        c.Set(1, elem, state);
        if (hasCell) c.Set(2, elem, state);
    }
}
