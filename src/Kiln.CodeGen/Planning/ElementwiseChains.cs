using Kiln.CodeGen.Backends;
using Kiln.Ir;
using Kiln.Ir.Ops;

namespace Kiln.CodeGen.Planning;

/// <summary>
/// Elementwise chains: an f32 <see cref="OpTraits.Elementwise"/> node the backend can fuse, whose value only feeds
/// the next such node (same dims), is computed inside that node's loop and never stored. A chain runs where its last
/// node stands.
/// </summary>
public static class ElementwiseChains
{
    /// <summary>Finds the chains (in the order their last nodes run) and marks the values computed inside them <see cref="PlannedStorage.Fused"/>.</summary>
    internal static List<ElementwiseChain> Find(Graph g, IReadOnlyList<Node> order, IReadOnlySet<Node> needed, Dictionary<Value, PlannedOperand> operands, IPlannedCodeBackend backend)
    {
        var outputValues = g.Outputs.Select(o => o.Value).ToHashSet();
        bool Fusable(Node n) => n.Outputs.Length == 1 && n.Outputs[0] is { } o && operands.TryGetValue(o, out var oo) && oo.Elem == DType.F32
            && oo.Storage is not (PlannedStorage.Alias or PlannedStorage.Fallback) && n.Has(OpTraits.Elementwise) && backend.IsFusableElementwise(n)
            && n.Inputs.All(v => v is not null && operands.TryGetValue(v, out var iop) && iop.Elem == DType.F32 && iop.Storage is not (PlannedStorage.KvPast or PlannedStorage.KvCache)
                && (iop.Dims.SequenceEqual(oo.Dims) || IsOne(iop)));
        var fusedInto = new Dictionary<Node, Node>();
        foreach (var n in order)
        {
            if (!Fusable(n)) continue;
            var o = n.Outputs[0]!;
            if (operands[o].Storage != PlannedStorage.Arena || outputValues.Contains(o)) continue;
            var readers = o.Uses.Select(u => u.Node).Where(needed.Contains).Distinct().ToList();
            if (readers.Count != 1 || !Fusable(readers[0]) || !operands[readers[0].Outputs[0]!].Dims.SequenceEqual(operands[o].Dims)) continue;
            fusedInto[n] = readers[0];
            operands[o] = operands[o] with { Storage = PlannedStorage.Fused };
        }
        Node ChainEnd(Node n) { while (fusedInto.TryGetValue(n, out var next)) n = next; return n; }
        return order.Where(n => fusedInto.ContainsValue(n) && !fusedInto.ContainsKey(n))
            .Select(end => new ElementwiseChain(order.Where(m => m == end || fusedInto.ContainsKey(m) && ChainEnd(m) == end).ToList()))
            .ToList();
    }

    /// <summary>The chain's steps, each reading operands (whole, or one element) or earlier steps.</summary>
    public static List<ElementwiseStep> Steps(MemoryPlan plan, ElementwiseChain chain)
    {
        var members = chain.Members;
        var steps = new List<ElementwiseStep>();
        foreach (var m in members)
        {
            var args = m.Inputs.Select(v =>
            {
                if (v!.Producer is { } p && p != chain.End && members.Contains(p)) return new ElementwiseArg(null, false, IndexOf(members, p));
                var op = plan.Resolve(v);
                return new ElementwiseArg(op, IsOne(op), -1);
            }).ToList();
            steps.Add(new ElementwiseStep(m, args));
        }
        return steps;
    }

    private static int IndexOf(IReadOnlyList<Node> members, Node n)
    {
        for (var i = 0; i < members.Count; i++) if (members[i] == n) return i;
        return -1;
    }

    /// <summary>Whether an operand holds one element (read as a scalar in the loop).</summary>
    internal static bool IsOne(PlannedOperand op) => op.Dims.All(d => d == "1");
}
