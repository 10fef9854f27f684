using Kiln.Ir;
using Kiln.Ir.Inference;

namespace Kiln.Passes;

/// <summary>One rewrite of the <c>fuse</c> pass: finds its pattern at an anchor node and replaces the chain with one fused node.</summary>
public interface IFusionPattern
{
    /// <summary>The name <c>fuse{only=[…] skip=[…]}</c> selects it by (globs allowed).</summary>
    string Name { get; }

    /// <summary>Rewrites the pattern ending at <paramref name="anchor"/> if it is there; returns whether it did.</summary>
    bool TryRewrite(Graph graph, Node anchor);
}

/// <summary>
/// <c>fuse</c>: recognizes the chains PyTorch's and paddle2onnx's exporters emit for common layers and replaces
/// each with one node of Kiln's fused ops (domain <c>kiln</c>): Conv+BatchNorm (and per-channel affine) folded
/// into the Conv's weights, hard swish, Conv+activation, RMSNorm, LayerNorm (into ONNX LayerNormalization), SiLU, GELU, rotary embeddings, grouped-query attention over a
/// KV cache, MatMul+Add(+activation). Patterns run in that order (so an activation is fused before a MatMul+Add can
/// absorb it); the chains they replace are removed. Options: <c>only</c> / <c>skip</c> (pattern-name globs).
/// </summary>
public sealed class Fusion : IPass
{
    public static IReadOnlyList<IFusionPattern> Patterns { get; } =
    [
        new ConvChannelAffineFolding(),
        new HardSwishFusion(),
        new ConvActivationFusion(),
        new RmsNormFusion(),
        new LayerNormFusion(),
        new SiluFusion(),
        new GeluFusion(),
        new RotaryEmbeddingFusion(),
        new GroupQueryAttentionFusion(),
        new MatMulAddFusion(),
    ];

    public string Name => "fuse";

    public string Summary => "fuse exporter patterns into Kiln's fused ops";

    public IReadOnlyList<string> OptionNames => ["only", "skip"];

    public void Run(PassContext ctx)
    {
        var only = ctx.Options.List("only");
        var skip = ctx.Options.List("skip");
        var chosen = Patterns.Where(p => (only is null || Glob.MatchesAny(only, p.Name)) && !Glob.MatchesAny(skip, p.Name)).ToList();
        foreach (var name in (only ?? []).Concat(skip ?? []))
            if (!Patterns.Any(p => Glob.Matches(name, p.Name)))
                throw new Kiln.Ir.Diagnostics.KilnException(new Kiln.Ir.Diagnostics.Diagnostic(Kiln.Ir.Diagnostics.DiagnosticCode.InvalidPipeline,
                    $"pass 'fuse': no pattern matches '{name}' (patterns: {string.Join(", ", Patterns.Select(p => p.Name))})"));
        // Keep types the source declared where inference alone finds less (patterns check shapes).
        ShapeInference.RunAndCollectKnown(ctx.Graph);
        for (var i = 0; i < chosen.Count; i++)
        {
            var pattern = chosen[i];
            var fused = 0;
            foreach (var g in ctx.Graph.AllGraphs().ToList())
                foreach (var node in g.Nodes.ToList())
                    if (g.Nodes.Contains(node) && pattern.TryRewrite(g, node))
                    {
                        ctx.Count(pattern.Name);
                        fused++;
                    }
            RemoveDead(ctx.Graph);
            ctx.Report($"pattern {i + 1}/{chosen.Count} {pattern.Name}: {fused} fused");
        }
        ShapeInference.RunAndCollectKnown(ctx.Graph);
    }

    private static void RemoveDead(Graph root)
    {
        var outputs = root.AllGraphs().SelectMany(g => g.Outputs).Select(o => o.Value).ToHashSet();
        foreach (var g in root.AllGraphs().ToList())
        {
            for (var i = g.Nodes.Count - 1; i >= 0; i--)
                if (g.Nodes[i].Outputs.All(o => o is null || (o.Uses.Count == 0 && !outputs.Contains(o)))) g.RemoveNode(g.Nodes[i]);
            foreach (var c in g.Constants.ToList())
                if (c.Uses.Count == 0 && !outputs.Contains(c)) g.RemoveConstant(c);
        }
    }
}
