using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// <c>quantize-activations{bits=8 mode=dynamic|static}</c>: W8A8. Every kiln:QuantizedMatMul with 8-bit weights
/// quantizes its input to int8 instead of int16 (<c>activation_bits=8</c>), per block of 32 input channels, and
/// multiplies on integers with i32 accumulation. <c>mode=dynamic</c> scales each row's blocks by their own max|x|/127
/// as the row arrives. <c>mode=static</c> fixes one scale per block from calibration data (the largest magnitude
/// any calibration row puts in that block, over 127) as an <c>activation_scales</c> input, so no per-row maximum is
/// searched and values beyond the calibrated range clamp; layers are calibrated in order, each on the activations
/// the already-quantized earlier layers produce. Run it after <c>quantize{bits=8}</c>, usually with
/// <c>smoothquant</c> before the quantize pass.
/// </summary>
public sealed class QuantizeActivations : IPass
{
    public string Name => "quantize-activations";

    public string Summary => "W8A8: int8 activations (per 32-block, dynamic or static scales) for the products with int8 weights";

    public IReadOnlyList<string> OptionNames => ["bits", "mode", "skip"];

    public bool Compresses => true;

    public void Run(PassContext ctx)
    {
        var bits = ctx.Options.OneOf("bits", 8, 8);
        var mode = ctx.Options.String("mode") ?? "dynamic";
        if (mode is not ("dynamic" or "static"))
            throw Bad($"mode={mode} is not a mode (dynamic: each row's blocks scaled as they arrive; static: scales fixed from calibration data)");
        var skip = ctx.Options.List("skip");
        var products = ctx.Graph.Nodes.Where(n => n.QualifiedOp == KilnOp.Qualified.QuantizedMatMul).ToList();
        if (products.Count == 0)
            throw Bad("no quantized products: run quantize{bits=8} before it");
        var chosen = products.Where(n => n.Attr<IntAttr>("bits")?.Value == 8 && !Glob.MatchesAny(skip, n.Inputs[1]?.Name) && !Glob.MatchesAny(skip, n.Name)).ToList();
        foreach (var n in chosen)
        {
            n.Attributes["activation_bits"] = new IntAttr(bits);
            ctx.Count("int8 activations");
        }
        if (mode == "dynamic") return;
        if (ctx.Calibration is not { } data)
            throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline,
                "pass 'quantize-activations': mode=static needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)"));
        CalibrationWalk.Run(ctx, data, chosen.ToHashSet(), (node, x) => [WithStaticScales(ctx, node, x)]);
    }

    /// <summary>The product again, with one scale per 32-block: the block's largest calibration magnitude over 127.</summary>
    private static Node WithStaticScales(PassContext ctx, Node n, CalibrationWalk.LayerInputs x)
    {
        const int block = 32;
        var blocks = (x.Columns + block - 1) / block;
        var scales = new float[blocks];
        for (var t = 0; t < x.Tokens; t++)
            for (var k = 0; k < x.Columns; k++)
                scales[k / block] = MathF.Max(scales[k / block], MathF.Abs(x.X[(long)t * x.Columns + k]));
        for (var b = 0; b < blocks; b++) scales[b] /= 127f;
        var g = ctx.Graph;
        var constant = g.AddConstant(g.UniqueName((n.Inputs[1]?.Name ?? n.Name ?? "product") + ".activation_scales"), TensorData.FromArray(DType.F32, [blocks], scales));
        var old = n.Outputs[0]!;
        var inputs = Enumerable.Range(0, 6).Select(i => i == 5 ? constant : i < n.Inputs.Count ? n.Inputs[i] : null).ToArray();
        var fresh = g.AddNode(KilnOp.QuantizedMatMul, KilnOp.Domain, n.Name, inputs, [g.UniqueName(old.Name + ".static")], new Dictionary<string, AttrValue>(n.Attributes), [old.Type]);
        g.Nodes.Remove(fresh);
        g.Nodes.Insert(g.Nodes.IndexOf(n) + 1, fresh);
        Graph.ReplaceAllUses(old, fresh.Outputs[0]!);
        g.RemoveNode(n);
        ctx.Count("static activation scales");
        return fresh;
    }

    private static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'quantize-activations': {what}"));
}
