using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Operators;

namespace Kiln.Passes;

/// <summary>
/// <c>quantize-kv{bits=8 skip=[…]}</c>: an int8 KV cache. Every kiln:GroupQueryAttention (made by <c>fuse</c>) reads
/// its keys and values as int8 with one f32 scale per position and head (<c>kv_bits=8</c>). A compiled decoder's
/// session then allocates its cache as int8 codes plus scales: d + 4 bytes per cached head row instead of 4d, which
/// is what bounds context length in memory and, at long contexts, the bytes attention reads per token. The evaluator
/// rounds K and V to the same values, so <c>kiln eval</c> measures the quality cost. <c>skip</c> matches attention node names.
/// </summary>
public sealed class QuantizeKv : IPass
{
    public string Name => "quantize-kv";

    public string Summary => "int8 KV cache: attention reads keys and values as int8 codes with a scale per position and head";

    public IReadOnlyList<string> OptionNames => ["bits", "skip"];

    public bool Compresses => true;

    public void Run(PassContext ctx)
    {
        var bits = (int)ctx.Options.OneOf("bits", 8, 8);
        var skip = ctx.Options.List("skip");
        var attention = ctx.Graph.Nodes.Where(n => n.QualifiedOp == KilnOp.Qualified.GroupQueryAttention).ToList();
        if (attention.Count == 0)
            throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline,
                $"pass 'quantize-kv': no {KilnOp.Qualified.GroupQueryAttention} in the graph: run fuse before it (it recognizes attention over a KV cache)"));
        foreach (var n in attention)
        {
            if (Glob.MatchesAny(skip, n.Name)) continue;
            n.Attributes["kv_bits"] = new IntAttr(bits);
            ctx.Count("int8 KV attention");
        }
    }
}
