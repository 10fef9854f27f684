using Kiln.Runtime.Kernels;

namespace Kiln.Passes;

/// <summary>
/// The normal equations of one layer's least-squares refit (<c>reconstruct</c>): the student's inputs Z [T, k] (what
/// the compressed earlier layers produce, with a column of ones when the layer has a bias) against the teacher's
/// outputs Y = X·Wₜᵀ + bₜ (the teacher's own inputs X through its weights), both over the same calibration tokens:
/// G = ZᵀZ/T, P = ZᵀY/T and ‖y_j‖²/T per output. Every refit is a choice of which parameters of each output's row
/// move (all of them, the kept ones of a pruned row, a quantized row's group scales) — a small system built from
/// these, whatever T is.
/// </summary>
public sealed class RefitEquations
{
    private RefitEquations(int inputs, bool bias, int outputs, double[] g, double[] p, double[] yy, double[] reference, int tokens)
    {
        (Inputs, Bias, Outputs, G, P, YY, Reference, Tokens) = (inputs, bias, outputs, g, p, yy, reference, tokens);
    }

    /// <summary>The calibration tokens the equations sum over.</summary>
    public int Tokens { get; }

    /// <summary>The equations over both sets of tokens (each set's means weighted by its tokens).</summary>
    public static RefitEquations Combine(RefitEquations a, RefitEquations b)
    {
        var tokens = a.Tokens + b.Tokens;
        double wa = (double)a.Tokens / tokens, wb = (double)b.Tokens / tokens;
        double[] Mix(double[] x, double[] y) => x.Select((v, i) => wa * v + wb * y[i]).ToArray();
        return new RefitEquations(a.Inputs, a.Bias, a.Outputs, Mix(a.G, b.G), Mix(a.P, b.P), Mix(a.YY, b.YY), Mix(a.Reference, b.Reference), tokens);
    }

    /// <summary>The student layer's input columns k (without the bias's ones).</summary>
    public int Inputs { get; }

    /// <summary>Whether row <see cref="Inputs"/> of G and P is the bias's (a column of ones in Z).</summary>
    public bool Bias { get; }

    public int Outputs { get; }

    /// <summary>Rows of G and P: k, plus one for the bias.</summary>
    public int Size => Inputs + (Bias ? 1 : 0);

    /// <summary>ZᵀZ/T [Size, Size].</summary>
    public double[] G { get; }


    /// <summary>ZᵀY/T [Size, Outputs].</summary>
    public double[] P { get; }

    /// <summary>‖y_j‖²/T per output.</summary>
    public double[] YY { get; }

    /// <summary>‖X̃·w̃_j‖²/T per output, the teacher's product alone (without a residual): what errors are relative to.</summary>
    public double[] Reference { get; }

    /// <param name="z">the student layer's inputs</param>
    /// <param name="x">the teacher layer's inputs, on the same tokens</param>
    /// <param name="teacherRows">the teacher's weight as [outputs, x.Columns] rows</param>
    /// <param name="residualGap">
    /// for a product that adds a residual (kiln:MatMulAdd with an activation C), the teacher's C minus the student's
    /// [tokens, outputs]: the student's product then also takes up what the residual stream lost upstream
    /// </param>
    public static RefitEquations Build(CalibrationWalk.LayerInputs z, bool bias, CalibrationWalk.LayerInputs x, float[] teacherRows, float[]? teacherBias, int outputs, float[]? residualGap = null)
    {
        if (z.Tokens != x.Tokens) throw new InvalidOperationException($"reconstruct: the student layer saw {z.Tokens} tokens, the teacher's {x.Tokens}");
        int ks = z.Columns, kt = x.Columns, m = ks + (bias ? 1 : 0), n = outputs;
        double scale = 1.0 / Math.Max(1, z.Tokens);
        var zz = Cross(z.X, ks, z.X, ks, z.Tokens);
        var zx = Cross(z.X, ks, x.X, kt, z.Tokens);
        var xx = Cross(x.X, kt, x.X, kt, x.Tokens);
        var zSum = ColumnSums(z);
        var xSum = ColumnSums(x);

        var g = new double[m * m];
        for (var a = 0; a < ks; a++)
            for (var b = 0; b < ks; b++) g[a * m + b] = zz[a * ks + b] * scale;
        if (bias)
        {
            for (var a = 0; a < ks; a++) g[a * m + ks] = g[ks * m + a] = zSum[a] * scale;
            g[ks * m + ks] = 1;
        }
        // Z̃ᵀX̃ with a ones column on both sides [m, kt + 1], and the teacher's rows with their bias [n, kt + 1].
        var c = new double[m * (kt + 1)];
        for (var a = 0; a < ks; a++)
        {
            for (var t = 0; t < kt; t++) c[a * (kt + 1) + t] = zx[a * kt + t] * scale;
            c[a * (kt + 1) + kt] = zSum[a] * scale;
        }
        if (bias)
        {
            for (var t = 0; t < kt; t++) c[ks * (kt + 1) + t] = xSum[t] * scale;
            c[ks * (kt + 1) + kt] = 1;
        }
        var w = new double[n * (kt + 1)];
        for (var j = 0; j < n; j++)
        {
            for (var t = 0; t < kt; t++) w[j * (kt + 1) + t] = teacherRows[(long)j * kt + t];
            w[j * (kt + 1) + kt] = teacherBias?[j] ?? 0;
        }
        var h = new double[(kt + 1) * (kt + 1)];
        for (var a = 0; a < kt; a++)
        {
            for (var b = 0; b < kt; b++) h[a * (kt + 1) + b] = xx[a * kt + b] * scale;
            h[a * (kt + 1) + kt] = h[kt * (kt + 1) + a] = xSum[a] * scale;
        }
        h[kt * (kt + 1) + kt] = 1;

        var p = new double[m * n];
        Parallel.For(0, m, a =>
        {
            var ca = c.AsSpan(a * (kt + 1), kt + 1);
            for (var j = 0; j < n; j++) p[a * n + j] = LayerRefit.Dot(ca, w.AsSpan(j * (kt + 1), kt + 1));
        });
        var yy = new double[n];
        Parallel.For(0, n, j =>
        {
            var wj = w.AsSpan(j * (kt + 1), kt + 1);
            double s = 0;
            for (var a = 0; a <= kt; a++) s += wj[a] * LayerRefit.Dot(h.AsSpan(a * (kt + 1), kt + 1), wj);
            yy[j] = s;
        });
        var reference = (double[])yy.Clone();
        if (residualGap is not null)
        {
            // Y = X̃·W̃ᵀ + D: P gains Z̃ᵀD, ‖y‖² gains 2·w̃ᵀX̃ᵀD + ‖D‖².
            var zd = Cross(z.X, ks, residualGap, n, z.Tokens);
            var xd = Cross(x.X, kt, residualGap, n, x.Tokens);
            var gap = new CalibrationWalk.LayerInputs(residualGap, z.Tokens, n);
            var dSum = ColumnSums(gap);
            var dd = new double[n];
            for (var t = 0; t < z.Tokens; t++)
                for (var j = 0; j < n; j++) dd[j] += (double)residualGap[(long)t * n + j] * residualGap[(long)t * n + j];
            for (var j = 0; j < n; j++)
            {
                for (var a = 0; a < ks; a++) p[a * n + j] += zd[a * n + j] * scale;
                if (bias) p[ks * n + j] += dSum[j] * scale;
                double cross = w[j * (kt + 1) + kt] * dSum[j];
                for (var c2 = 0; c2 < kt; c2++) cross += w[j * (kt + 1) + c2] * xd[c2 * n + j];
                yy[j] += (2 * cross + dd[j]) * scale;
            }
        }
        return new RefitEquations(ks, bias, n, g, p, yy, reference, z.Tokens);
    }

    /// <summary>
    /// The equations over the first three quarters of each calibration sample's tokens, and over the last quarter
    /// (held out, to judge candidate refits on; null when no sample has four tokens).
    /// </summary>
    public static (RefitEquations Fit, RefitEquations? Held) BuildSplit(CalibrationWalk.LayerInputs z, bool bias, CalibrationWalk.LayerInputs x, float[] teacherRows, float[]? teacherBias, int outputs, float[]? residualGap = null)
    {
        var fitRanges = new List<(int Start, int Count)>();
        var heldRanges = new List<(int Start, int Count)>();
        var at = 0;
        foreach (var tokens in z.SampleTokens)
        {
            var held = tokens / 4;
            fitRanges.Add((at, tokens - held));
            if (held > 0) heldRanges.Add((at + tokens - held, held));
            at += tokens;
        }
        if (heldRanges.Count == 0) return (Build(z, bias, x, teacherRows, teacherBias, outputs, residualGap), null);
        RefitEquations Part(List<(int Start, int Count)> ranges) => Build(Take(z, ranges), bias, Take(x, ranges), teacherRows, teacherBias, outputs,
            residualGap is null ? null : Take(new CalibrationWalk.LayerInputs(residualGap, z.Tokens, outputs), ranges).X);
        return (Part(fitRanges), Part(heldRanges));
    }

    private static CalibrationWalk.LayerInputs Take(CalibrationWalk.LayerInputs v, List<(int Start, int Count)> ranges)
    {
        var tokens = ranges.Sum(r => r.Count);
        var x = new float[(long)tokens * v.Columns];
        var at = 0L;
        foreach (var (start, count) in ranges)
        {
            Array.Copy(v.X, (long)start * v.Columns, x, at, (long)count * v.Columns);
            at += (long)count * v.Columns;
        }
        return new CalibrationWalk.LayerInputs(x, tokens, v.Columns) { SampleTokens = ranges.Select(r => r.Count).ToList() };
    }

    /// <summary>
    /// AᵀB [ka, kb] over the tokens: the runtime's f32 GEMM on chunks of 1,024 tokens, summed in double, so no f32 sum
    /// runs over more than one chunk.
    /// </summary>
    private static double[] Cross(float[] a, int ka, float[] b, int kb, int tokens)
    {
        const int Chunk = 1024;
        var r = new double[(long)ka * kb];
        var part = new float[ka * kb];
        for (var t0 = 0; t0 < tokens; t0 += Chunk)
        {
            var count = Math.Min(Chunk, tokens - t0);
            MatMul.Gemm(a.AsSpan(t0 * ka, count * ka), ka, true, b.AsSpan(t0 * kb, count * kb), kb, false, part, kb, ka, kb, count, false);
            for (var i = 0; i < part.Length; i++) r[i] += part[i];
        }
        return r;
    }

    private static double[] ColumnSums(CalibrationWalk.LayerInputs x)
    {
        var s = new double[x.Columns];
        for (var t = 0; t < x.Tokens; t++)
            for (var j = 0; j < x.Columns; j++) s[j] += x.X[(long)t * x.Columns + j];
        return s;
    }

}
