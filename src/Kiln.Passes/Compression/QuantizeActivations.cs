using Kiln.Ir;
using Kiln.Ir.Diagnostics;

namespace Kiln.Passes;

/// <summary>
/// <c>quantize-activations{bits=8 mode=dynamic}</c>: W8A8. Every kiln:QuantizedMatMul with 8-bit weights quantizes its
/// input to int8 instead of int16 (<c>activation_bits=8</c>): per block of 32, scale max|x|/127 computed as each row
/// arrives (dynamic), and an integer product with i32 accumulation. Run it after <c>quantize{bits=8}</c>, usually with
/// <c>smoothquant</c> before the quantize pass. Static scales (fixed from calibration) are not built yet: mode=static
/// is refused.
/// </summary>
public sealed class QuantizeActivations : IPass
{
    public string Name => "quantize-activations";

    public string Summary => "W8A8: int8 activations (per 32-block, dynamic) for the products with int8 weights";

    public IReadOnlyList<string> OptionNames => ["bits", "mode", "skip"];

    public void Run(PassContext ctx)
    {
        var bits = ctx.Options.Int("bits", 8, 8, 8);
        var mode = ctx.Options.String("mode") ?? "dynamic";
        if (mode != "dynamic")
            throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline,
                $"pass 'quantize-activations': mode={mode} is not supported (mode=dynamic computes each block's scale as the row arrives)"));
        var skip = ctx.Options.List("skip");
        var products = ctx.Graph.Nodes.Where(n => n.QualifiedOp == "kiln:QuantizedMatMul").ToList();
        if (products.Count == 0)
            throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline, "pass 'quantize-activations': no quantized products: run quantize{bits=8} before it"));
        foreach (var n in products)
        {
            if (n.Attr<IntAttr>("bits")?.Value != 8 || Glob.MatchesAny(skip, n.Inputs[1]?.Name) || Glob.MatchesAny(skip, n.Name)) continue;
            n.Attributes["activation_bits"] = new IntAttr(bits);
            ctx.Count("int8 activations");
        }
    }
}
