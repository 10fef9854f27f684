using Kiln.Ir;

namespace Kiln.Passes;

/// <summary>
/// <c>dce</c>: removes nodes none of whose outputs is used (by a node, a subgraph or a graph output) and constants
/// nothing reads, in every graph. ONNX ops have no side effects, so an unused node is dead. Graph inputs stay:
/// they are the model's interface.
/// </summary>
public sealed class DeadCodeElimination : IPass
{
    public string Name => "dce";

    public string Summary => "remove unused nodes and constants";

    public IReadOnlyList<string> OptionNames => [];

    public void Run(PassContext ctx)
    {
        bool changed;
        do
        {
            changed = false;
            var outputs = ctx.Graph.AllGraphs().SelectMany(g => g.Outputs).Select(o => o.Value).ToHashSet();
            foreach (var g in ctx.Graph.AllGraphs().ToList())
            {
                // Backwards, so a chain of dead nodes goes in one sweep.
                for (var i = g.Nodes.Count - 1; i >= 0; i--)
                {
                    var n = g.Nodes[i];
                    if (n.Outputs.Any(o => o is not null && (o.Uses.Count > 0 || outputs.Contains(o)))) continue;
                    g.RemoveNode(n);
                    ctx.Count("nodes");
                    changed = true;
                }
                // Unused optional outputs of live nodes become absent, so the emitter need not compute them.
                foreach (var n in g.Nodes)
                    for (var k = 0; k < n.Outputs.Length; k++)
                        if (n.Outputs[k] is { } o && k > 0 && o.Uses.Count == 0 && !outputs.Contains(o) && OptionalOutput(n, k))
                            g.DropOutput(n, k);
                foreach (var c in g.Constants.ToList())
                    if (c.Uses.Count == 0 && !outputs.Contains(c)) { g.RemoveConstant(c); ctx.Count("constants"); }
            }
        } while (changed);
    }

    /// <summary>Outputs an op computes only when asked: the mask of Dropout, the indices of MaxPool, LayerNorm's statistics.</summary>
    private static bool OptionalOutput(Node n, int k) =>
        n.Domain.Length == 0 && n.Op is "Dropout" or "MaxPool" or "LayerNormalization" or "BatchNormalization";
}
