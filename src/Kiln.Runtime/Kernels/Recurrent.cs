namespace Kiln.Runtime.Kernels;

/// <summary>Options common to RNN, GRU and LSTM (ONNX attributes resolved by the caller).</summary>
public sealed record RecurrentOptions(string Direction, int Hidden, string[] Activations, float[] Alphas, float[] Betas, float? Clip,
    bool LinearBeforeReset, bool InputForget, int Layout);

/// <summary>
/// RNN, GRU and LSTM over a sequence, in double, one direction at a time (bidirectional runs both and stacks them).
/// Gate order follows ONNX: LSTM i,o,f,c; GRU z,r,h. Steps past a batch row's sequence length output zeros and
/// keep the state.
/// </summary>
public static class Recurrent
{
    public static (Tensor Y, Tensor Yh, Tensor? Yc) Run(string kind, Tensor x, Tensor w, Tensor r, Tensor? b, Tensor? seqLens,
        Tensor? h0, Tensor? c0, Tensor? peep, RecurrentOptions o)
    {
        var gates = kind switch { "LSTM" => 4, "GRU" => 3, _ => 1 };
        var xs = o.Layout == 0 ? x : Movement.Transpose(x, [1, 0, 2]);
        int seq = xs.Shape[0], batch = xs.Shape[1], input = xs.Shape[2], hid = o.Hidden;
        var dirs = o.Direction == "bidirectional" ? 2 : 1;
        var X = xs.ToDoubles();
        var W = w.ToDoubles();
        var R = r.ToDoubles();
        var B = b?.ToDoubles();
        var P = peep?.ToDoubles();
        var lens = seqLens?.ToLongs() ?? Enumerable.Repeat((long)seq, batch).ToArray();
        var H0 = h0 is null ? null : (o.Layout == 0 ? h0 : Movement.Transpose(h0, [1, 0, 2])).ToDoubles();
        var C0 = c0 is null ? null : (o.Layout == 0 ? c0 : Movement.Transpose(c0, [1, 0, 2])).ToDoubles();
        var Y = new double[(long)seq * dirs * batch * hid];
        var Yh = new double[(long)dirs * batch * hid];
        var Yc = new double[(long)dirs * batch * hid];
        var perDir = kind switch { "LSTM" => 3, "GRU" => 2, _ => 1 };
        for (var d = 0; d < dirs; d++)
        {
            var reverse = o.Direction == "reverse" || d == 1;
            double Act(int k, double v)
            {
                var idx = d * perDir + k;
                var name = idx < o.Activations.Length ? o.Activations[idx] : DefaultActivation(kind, k);
                var alpha = idx < o.Alphas.Length ? o.Alphas[idx] : float.NaN;
                var beta = idx < o.Betas.Length ? o.Betas[idx] : float.NaN;
                return Apply(name, v, alpha, beta);
            }
            var wOff = (long)d * gates * hid * input;
            var rOff = (long)d * gates * hid * hid;
            var bOff = (long)d * 2 * gates * hid;
            for (var n = 0; n < batch; n++)
            {
                var h = new double[hid];
                var c = new double[hid];
                for (var k = 0; k < hid; k++)
                {
                    h[k] = H0?[((long)d * batch + n) * hid + k] ?? 0;
                    c[k] = C0?[((long)d * batch + n) * hid + k] ?? 0;
                }
                var len = (int)lens[n];
                var g = new double[gates * hid];
                var rh = new double[gates * hid];
                for (var step = 0; step < len; step++)
                {
                    var t = reverse ? len - 1 - step : step;
                    for (var j = 0; j < gates * hid; j++)
                    {
                        double sx = 0, sh = 0;
                        for (var k = 0; k < input; k++) sx += X[((long)t * batch + n) * input + k] * W[wOff + (long)j * input + k];
                        for (var k = 0; k < hid; k++) sh += h[k] * R[rOff + (long)j * hid + k];
                        if (B is not null) { sx += B[bOff + j]; sh += B[bOff + gates * hid + j]; }
                        g[j] = sx;
                        rh[j] = sh;
                    }
                    double Clip(double v) => o.Clip is { } cl ? Math.Clamp(v, -cl, cl) : v;
                    var hNew = new double[hid];
                    for (var k = 0; k < hid; k++)
                    {
                        switch (kind)
                        {
                            case "RNN":
                                hNew[k] = Act(0, Clip(g[k] + rh[k]));
                                break;
                            case "GRU":
                                {
                                    var z = Act(0, Clip(g[k] + rh[k]));
                                    var rr = Act(0, Clip(g[hid + k] + rh[hid + k]));
                                    double hh;
                                    if (o.LinearBeforeReset) hh = Act(1, Clip(g[2 * hid + k] + rr * rh[2 * hid + k]));
                                    else
                                    {
                                        double s = 0;
                                        for (var q = 0; q < hid; q++) s += rr_(q) * h[q] * R[rOff + (long)(2 * hid + k) * hid + q];
                                        var rb = B is not null ? B[bOff + gates * hid + 2 * hid + k] : 0;
                                        hh = Act(1, Clip(g[2 * hid + k] + s + rb));
                                    }
                                    hNew[k] = (1 - z) * hh + z * h[k];
                                    break;
                                }
                            default:
                                {
                                    var pi = P?[(long)d * 3 * hid + k] ?? 0;
                                    var po = P?[(long)d * 3 * hid + hid + k] ?? 0;
                                    var pf = P?[(long)d * 3 * hid + 2 * hid + k] ?? 0;
                                    var i = Act(0, Clip(g[k] + rh[k] + pi * c[k]));
                                    var f = Act(0, Clip(g[2 * hid + k] + rh[2 * hid + k] + pf * c[k]));
                                    if (o.InputForget) f = 1 - i;
                                    var cc = Act(1, Clip(g[3 * hid + k] + rh[3 * hid + k]));
                                    var cNew = f * c[k] + i * cc;
                                    var oo = Act(0, Clip(g[hid + k] + rh[hid + k] + po * cNew));
                                    hNew[k] = oo * Act(2, cNew);
                                    rh[k] = cNew; // stash the new cell (rh[k] is not read again for this k)
                                    break;
                                }
                        }
                    }
                    if (kind == "LSTM") for (var k = 0; k < hid; k++) c[k] = rh[k];
                    Array.Copy(hNew, h, hid);
                    for (var k = 0; k < hid; k++) Y[(((long)t * dirs + d) * batch + n) * hid + k] = h[k];

                    double rr_(int q) => Act(0, Clip(g[hid + q] + rh[hid + q]));
                }
                for (var k = 0; k < hid; k++)
                {
                    Yh[((long)d * batch + n) * hid + k] = h[k];
                    Yc[((long)d * batch + n) * hid + k] = c[k];
                }
            }
        }
        var y = Movement.FromDoubles(x.Type, [seq, dirs, batch, hid], Y);
        var yh = Movement.FromDoubles(x.Type, [dirs, batch, hid], Yh);
        var yc = Movement.FromDoubles(x.Type, [dirs, batch, hid], Yc);
        if (o.Layout == 1)
        {
            y = Movement.Transpose(y, [2, 0, 1, 3]);
            yh = Movement.Transpose(yh, [1, 0, 2]);
            yc = Movement.Transpose(yc, [1, 0, 2]);
        }
        return (y, yh, kind == "LSTM" ? yc : null);
    }

    private static string DefaultActivation(string kind, int k) => kind switch
    {
        "RNN" => "Tanh",
        _ => k == 0 ? "Sigmoid" : "Tanh",
    };

    public static double Apply(string name, double v, float alpha, float beta) => name.ToLowerInvariant() switch
    {
        "relu" => Math.Max(0, v),
        "tanh" => Math.Tanh(v),
        "sigmoid" => 1 / (1 + Math.Exp(-v)),
        "affine" => (float.IsNaN(alpha) ? 1 : alpha) * v + (float.IsNaN(beta) ? 0 : beta),
        "leakyrelu" => v >= 0 ? v : (float.IsNaN(alpha) ? 0.01 : alpha) * v,
        "thresholdedrelu" => v > (float.IsNaN(alpha) ? 1 : alpha) ? v : 0,
        "scaledtanh" => (float.IsNaN(alpha) ? 1 : alpha) * Math.Tanh((float.IsNaN(beta) ? 1 : beta) * v),
        "hardsigmoid" => Math.Clamp((float.IsNaN(alpha) ? 0.2 : alpha) * v + (float.IsNaN(beta) ? 0.5 : beta), 0, 1),
        "elu" => v >= 0 ? v : (float.IsNaN(alpha) ? 1 : alpha) * (Math.Exp(v) - 1),
        "softsign" => v / (1 + Math.Abs(v)),
        "softplus" => Math.Log(1 + Math.Exp(v)),
        _ => throw new KernelException($"recurrent activation '{name}' is not supported"),
    };
}
