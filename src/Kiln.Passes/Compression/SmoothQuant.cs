using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// <c>smoothquant{alpha=0.5}</c> (Xiao et al., 2022): moves activation outliers into the weights, so int8 activations
/// (W8A8) lose less. For every normalization (kiln:RMSNorm, LayerNormalization) whose output is read only by products
/// with 2-D constant weights, each input channel j gets s_j = max|x_j|^α / max|W_j|^(1−α) (activation maximum over the
/// calibration data, weight maximum over the row j of every reading weight); the norm's scale (and bias) are divided
/// by s and the weights' rows multiplied by it. The float model computes the same function; run it before
/// <c>quantize</c>. Needs calibration data.
/// </summary>
public sealed class SmoothQuant : IPass
{
    public string Name => "smoothquant";

    public string Summary => "per-channel smoothing of activation outliers into the weights (before W8A8)";

    public IReadOnlyList<string> OptionNames => ["alpha"];

    public void Run(PassContext ctx)
    {
        var alphaText = ctx.Options.String("alpha") ?? "0.5";
        if (!double.TryParse(alphaText, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var alpha) || alpha is < 0 or > 1)
            throw Bad($"option 'alpha' must be a number in [0, 1], not '{alphaText}'");
        if (ctx.Calibration is not { } data) throw Bad("needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");
        var g = ctx.Graph;
        // Normalizations whose every reader is a product with a constant [K, N] weight (MatMul, MatMulAdd) read as x·W.
        var groups = new List<(Node Norm, List<Node> Readers)>();
        foreach (var n in g.Nodes)
        {
            if (!(n.QualifiedOp is KilnOp.Qualified.RmsNorm or "LayerNormalization") || n.Inputs[1] is not { Kind: ValueKind.Constant, Data.Elem: DType.F32 }) continue;
            if (n.QualifiedOp == "LayerNormalization" && n.AttrInt("axis") != -1) continue;
            var y = n.Outputs[0]!;
            if (y.Uses.Count == 0 || g.Outputs.Any(o => o.Value == y)) continue;
            var readers = y.Uses.Select(u => u.Node).Distinct().ToList();
            if (readers.All(r => r.QualifiedOp is "MatMul" or KilnOp.Qualified.MatMulAdd && r.Inputs[0] == y && r.Inputs[1] is { Kind: ValueKind.Constant, Data: { Elem: DType.F32, Dims.Length: 2 } } w
                && w.Uses.Count == 1))
                groups.Add((n, readers));
        }
        if (groups.Count == 0) { ctx.Notes.Add("no normalization feeds only constant-weight products: nothing to smooth"); return; }
        // The activation maximum per channel at each norm's output, on the calibration data (the first reader sees it).
        var firstReader = groups.ToDictionary(x => x.Readers[0], x => x.Norm);
        var amax = new Dictionary<Node, float[]>();
        CalibrationWalk.Run(ctx, data, firstReader.Keys.ToHashSet(), (node, x) =>
        {
            var m = new float[x.Columns];
            for (var t = 0; t < x.Tokens; t++)
                for (var j = 0; j < x.Columns; j++) m[j] = Math.Max(m[j], Math.Abs(x.X[(long)t * x.Columns + j]));
            amax[firstReader[node]] = m;
            return [node];
        });
        foreach (var (norm, readers) in groups)
        {
            var act = amax[norm];
            var k = act.Length;
            var weights = readers.Select(r => r.Inputs[1]!).ToList();
            var wmax = new float[k];
            var data2 = weights.Select(w => w.Data!.ToArray<float>()).ToList();
            for (var i = 0; i < weights.Count; i++)
            {
                var n = (int)weights[i].Data!.Dims[1];
                for (var j = 0; j < k; j++)
                    for (var c = 0; c < n; c++) wmax[j] = Math.Max(wmax[j], Math.Abs(data2[i][j * n + c]));
            }
            var s = new float[k];
            for (var j = 0; j < k; j++)
                s[j] = act[j] == 0 || wmax[j] == 0 ? 1f : (float)Math.Max(1e-5, Math.Pow(act[j], alpha) / Math.Pow(wmax[j], 1 - alpha));
            Replace(g, norm, 1, Divide(norm.Inputs[1]!.Data!.ToArray<float>(), s));
            if (norm.Inputs.Count > 2 && norm.Inputs[2] is { Kind: ValueKind.Constant, Data.Elem: DType.F32 } bias)
                Replace(g, norm, 2, Divide(bias.Data!.ToArray<float>(), s));
            for (var i = 0; i < weights.Count; i++)
            {
                var n = (int)weights[i].Data!.Dims[1];
                var w = data2[i];
                for (var j = 0; j < k; j++)
                    for (var c = 0; c < n; c++) w[j * n + c] *= s[j];
                var fresh = g.AddConstant(g.UniqueName(weights[i].Name + ".smoothed"), TensorData.FromArray(DType.F32, weights[i].Data!.Dims, w));
                readers[i].SetInput(1, fresh);
                if (weights[i].Uses.Count == 0) g.RemoveConstant(weights[i]);
            }
            ctx.Count("smoothed norms");
            ctx.Report($"{norm.Name ?? norm.QualifiedOp}: {readers.Count} products, scales {s.Min():0.###}..{s.Max():0.###}");
        }
    }

    private static float[] Divide(float[] v, float[] s)
    {
        var r = new float[v.Length];
        for (var i = 0; i < v.Length; i++) r[i] = v[i] / s[i % s.Length];
        return r;
    }

    private static void Replace(Graph g, Node n, int input, float[] values)
    {
        var old = n.Inputs[input]!;
        var fresh = g.AddConstant(g.UniqueName(old.Name + ".smoothed"), TensorData.FromArray(DType.F32, old.Data!.Dims, values));
        n.SetInput(input, fresh);
        if (old.Uses.Count == 0) g.RemoveConstant(old);
    }

    private static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'smoothquant': {what}"));
}
