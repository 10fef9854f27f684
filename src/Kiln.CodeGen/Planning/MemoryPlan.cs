using Kiln.Ir;

namespace Kiln.CodeGen.Planning;

/// <summary>Elementwise nodes computed in one loop where the last stands; only the last one's value is stored.</summary>
public sealed record ElementwiseChain(IReadOnlyList<Node> Members)
{
    public Node End => Members[^1];
}

/// <summary>
/// The memory plan of one entry (Run or Step): the nodes that run, in order; where every value they read or write
/// lives (<see cref="PlannedOperand"/>); the arena's slots with the byte sizes of the values that share each; the
/// elementwise chains; the outputs that must be copied out. It is data: <c>kiln dump --plan</c> prints it
/// (<see cref="Lines"/>) and a backend turns it into code.
/// </summary>
public sealed record MemoryPlan
{
    public required PlanMode Mode { get; init; }

    public required Graph Graph { get; init; }

    public required IReadOnlyList<Node> Order { get; init; }

    /// <summary>Every value the planned nodes read or write.</summary>
    public required IReadOnlyDictionary<Value, PlannedOperand> Values { get; init; }

    /// <summary>Per arena slot, the byte sizes (C# long expressions) of the values placed in it: the slot takes the largest.</summary>
    public required IReadOnlyList<IReadOnlyList<string>> SlotSizes { get; init; }

    public required IReadOnlyList<ElementwiseChain> Chains { get; init; }

    /// <summary>Graph outputs that are not written in place (an input, a constant, a value read later): copied into a new tensor at the end.</summary>
    public required IReadOnlyList<(int Index, Value Value)> Copies { get; init; }

    /// <summary>Values computed from the input dims, in the order they were planned (each declared once before the nodes run).</summary>
    public required IReadOnlyList<Value> Known { get; init; }

    /// <summary>A decoding step: the node computing the logits, which may compute only each row's last position.</summary>
    public Node? LogitsNode { get; init; }

    /// <summary>A decoding step sizes its slots for the longest context the cache allows: this local, set before the sizes.</summary>
    public (string Name, string Expression)? Longest { get; init; }

    /// <summary>Int locals for the symbolic dims the plan uses, each computed once per call (after <see cref="Longest"/>).</summary>
    public IReadOnlyList<(string Name, string Expression)> DimLocals { get; init; } = [];

    /// <summary>The nodes with no planned kernel: each runs through its operator entry where it stands.</summary>
    public IReadOnlyList<PlanFallback> Fallbacks { get; init; } = [];

    /// <summary>Whether a node runs through its operator entry.</summary>
    public bool IsFallback(Node n) => Fallbacks.Any(f => f.Node == n);

    /// <summary>The number of values placed in arena slots.</summary>
    public int ArenaValues => Values.Values.Count(v => v.Storage == PlannedStorage.Arena);

    /// <summary>The value's operand, a view's read through its root's storage.</summary>
    public PlannedOperand Resolve(Value v)
    {
        var op = Values[v];
        if (op.Storage != PlannedStorage.Alias) return op;
        var r = Values[op.ViewOf!];
        return op with { Span = r.Span, WeightField = r.WeightField };
    }

    /// <summary>The chain a node ends (its loop runs there), or null.</summary>
    public ElementwiseChain? ChainEndingAt(Node n) => Chains.FirstOrDefault(c => c.End == n);

    /// <summary>The plan as text: a summary line, one line per computed value (where it lives), one per chain.</summary>
    public IReadOnlyList<string> Lines()
    {
        var views = Order.Count(n => n.Outputs.Any(o => o is not null && Values[o].Storage == PlannedStorage.Alias));
        var lines = new List<string> { $"{Mode.ToString().ToLowerInvariant()}: {Order.Count} nodes, {ArenaValues} values in {SlotSizes.Count} arena slots, {views} views, {Chains.Count} elementwise chains, {Fallbacks.Count} generic operator calls" };
        foreach (var (n, o) in Order.SelectMany(n => n.Outputs.OfType<Value>().Select(o => (n, o))))
        {
            var op = Values[o];
            var where = op.Storage switch
            {
                PlannedStorage.Arena => $"slot {op.Slot}",
                PlannedStorage.Output => $"output '{Graph.Outputs[op.OutputIndex].Value.Name}'",
                PlannedStorage.Alias => $"view of %{op.ViewOf!.Name}",
                PlannedStorage.Fused => $"in chain {Chains.Select((c, i) => (c, i)).First(x => x.c.Members.Contains(n)).i}",
                PlannedStorage.Logits => "the caller's logits span",
                PlannedStorage.KvCache => "the KV cache, in place",
                PlannedStorage.Fallback => "a tensor from the operator entry",
                var other => other.ToString().ToLowerInvariant(),
            };
            lines.Add($"  %{o.Name}: {o.Type} {where} = {n.QualifiedOp}");
        }
        foreach (var f in Fallbacks) lines.Add($"  generic operator call: {f}");
        for (var c = 0; c < Chains.Count; c++)
            lines.Add($"  chain {c}: {string.Join("·", Chains[c].Members.Select(m => m.Op))} → one loop writing %{Chains[c].End.Outputs[0]!.Name}");
        return lines;
    }
}
