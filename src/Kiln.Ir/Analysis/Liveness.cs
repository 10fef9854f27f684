namespace Kiln.Ir.Analysis;

/// <summary>
/// When each value of a graph is read for the last time: the one liveness analysis, shared by the evaluator (dropping
/// intermediates), generated code (returning buffers to the pool), the planner (arena slots) and calibration.
/// A node holding subgraphs reads, at its own position, every value of the graph its subgraphs read (at any depth).
/// </summary>
public static class Liveness
{
    /// <summary>
    /// The position of the last node that reads each value (values nothing reads are absent). Graph outputs are not
    /// treated specially: callers that keep them keep them.
    /// </summary>
    /// <param name="g">the graph whose values are tracked (reads of outer values from its nodes are reported too)</param>
    /// <param name="order">the nodes that run, in order (default: the graph's nodes); nodes left out read nothing</param>
    /// <param name="position">a node's position (default: its index in <paramref name="order"/>), e.g. where a fused chain runs</param>
    /// <param name="storageOf">the value whose storage a value shares (a view's root): a read keeps that value alive</param>
    public static Dictionary<Value, int> LastReads(Graph g, IReadOnlyList<Node>? order = null, Func<Node, int>? position = null,
        Func<Value, Value>? storageOf = null)
    {
        order ??= g.Nodes;
        var last = new Dictionary<Value, int>();
        void Read(Value v, int at)
        {
            var key = storageOf?.Invoke(v) ?? v;
            last[key] = Math.Max(last.GetValueOrDefault(key, -1), at);
        }
        for (var i = 0; i < order.Count; i++)
        {
            var n = order[i];
            var at = position?.Invoke(n) ?? i;
            foreach (var v in n.Inputs) if (v is not null) Read(v, at);
            foreach (var sub in n.Subgraphs)
                foreach (var v in OuterReads(sub)) Read(v, at);
        }
        return last;
    }

    /// <summary>The values a subgraph (or any graph nested in it) reads from the graphs enclosing it.</summary>
    public static IEnumerable<Value> OuterReads(Graph sub) =>
        sub.AllGraphs().SelectMany(g => g.Nodes).SelectMany(n => n.Inputs).OfType<Value>()
            .Concat(sub.AllGraphs().SelectMany(g => g.Outputs.Select(o => o.Value)))
            .Where(v => !IsWithin(v.Owner, sub)).Distinct();

    private static bool IsWithin(Graph g, Graph root)
    {
        for (var x = g; x is not null; x = x.Parent)
            if (x == root) return true;
        return false;
    }
}
