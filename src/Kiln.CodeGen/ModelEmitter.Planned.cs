using Kiln.CodeGen.Backends;
using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen;

/// <summary>
/// Planned emission: when the backend can plan every node the outputs need (<see cref="MemoryPlanner"/>), the model
/// runs from the memory plan: the backend declares its storage, then each node (or elementwise chain) is one kernel
/// call writing into its output's storage. For decoders, a second entry (<c>Step</c>) writes new keys and values into
/// a caller-owned KV cache and the logits into a caller-owned span: nothing is allocated per token.
/// </summary>
public sealed partial class ModelEmitter
{
    /// <summary>The code of a planned body and its plan.</summary>
    private sealed record PlannedCode(string Code, IReadOnlyList<string> Returns, MemoryPlan Plan);

    private readonly Dictionary<Node, int> _nodeIds = [];

    // The symbol a decoding step binds to the cache's length (past_seq), when there is one.
    private string? _stepPastSymbol;

    // The KV cache format the planned decoding step reads and writes: 32 (f32) or 8 (int8, quantize-kv).
    private int _stepKvBits = 32;

    private int NodeId(Node n)
    {
        if (_nodeIds.TryGetValue(n, out var id)) return id;
        _nodes.Add(n);
        return _nodeIds[n] = _nodes.Count - 1;
    }

    /// <summary>Why the model cannot be planned in this mode, or null with the code.</summary>
    private string? TryPlan(PlanMode mode, IPlannedCodeBackend backend, DecoderIo? io, int indent, out PlannedCode? result)
    {
        result = null;
        var g = _graph;
        var (computed, needed) = Plan(g, g.Outputs.Select(o => o.Value).ToHashSet());
        var inputs = new PlanInputs(g, mode, io, computed, needed, _symbolLocals, _known, NameOf, mode == PlanMode.Step ? _stepPastSymbol : null);
        var planned = MemoryPlanner.Plan(inputs, backend, out var why);
        if (planned is null) return why;
        // The backend binds every value to the expressions holding it; views read their root's storage.
        var plan = planned with { Values = planned.Values.ToDictionary(x => x.Key, x => backend.Bind(x.Value)) };

        if (mode == PlanMode.Step) _stepKvBits = plan.Values.Values.Any(v => v.Int8Cache) ? 8 : 32;

        var w = new CodeWriter { Indent = indent };
        // The symbolic dims this entry uses, each computed once (a step's arena is sized for the longest context the cache allows).
        if (plan.Longest is { } longest) w.Line($"long {longest.Name} = {longest.Expression};");
        foreach (var (name, expression) in plan.DimLocals) w.Line($"int {name} = {expression};");
        backend.EmitStorage(w, plan);
        if (mode == PlanMode.Step)
        {
            var logits = g.Outputs[io!.Logits].Value;
            var lo = plan.Values[plan.Values[logits].ViewOf ?? logits];
            var wanted = $"(lastPositionOnly ? batch * {io.Vocabulary} : {lo.Count})";
            w.Line($"var wantedLogits = {wanted};");
            w.Line("if (logits.Length != wantedLogits) throw new ArgumentException($\"logits need {wantedLogits} floats, got {logits.Length}\");");
        }
        foreach (var v in plan.Known) backend.EmitKnown(w, plan.Values[v], _known[v], _symbolLocals);
        // KILN_PROFILE: time per node (Generated.ProfileByNode); 0 when off, so each node then costs one test.
        w.Line("long profiled = Generated.NodeProfileStart();");
        foreach (var n in plan.Order)
        {
            var outs = n.Outputs.Select(v => v is null ? null : plan.Resolve(v)).ToList();
            var first = outs.First(x => x is not null)!;
            var note = first.Storage switch
            {
                PlannedStorage.Alias => " (a view of its input)",
                PlannedStorage.Fused => " (computed in the loop of the node it feeds)",
                PlannedStorage.Fallback => " (no planned kernel: its operator entry)",
                _ => "",
            };
            w.Line($"// {CSharp.Comment(n.Name ?? "#" + n.Index)}: {n.QualifiedOp} → {CSharp.Comment(string.Join(", ", n.Outputs.Select(o => o is null ? "_" : "%" + o.Name)))}{note}");
            if (first.Storage is PlannedStorage.Alias or PlannedStorage.Fused) continue;
            w.Line($"at = {NodeId(n)};");
            var ins = n.Inputs.Select(v => v is null ? null : plan.Resolve(v)).ToList();
            if (first.Storage == PlannedStorage.Fallback) EmitFallbackCall(w, n, backend, ins, outs);
            else
            {
                foreach (var op in outs) if (op is not null) backend.EmitAllocation(w, op);
                if (plan.ChainEndingAt(n) is { } chain) backend.EmitElementwiseLoop(w, ElementwiseChains.Steps(plan, chain), first);
                else backend.EmitPlanned(new PlannedNodeContext(n, w, ins, outs) { LastRowsOnly = n == plan.LogitsNode ? "lastPositionOnly" : null, Static = Static });
            }
            w.Line("if (profiled != 0) profiled = Generated.NodeProfileEnd(profiled, NodeNames[at], NodeOps[at], NodeInputs[at]);");
        }
        foreach (var (i, v) in plan.Copies) backend.EmitOutputCopy(w, i, plan.Resolve(v));
        result = new PlannedCode(w.ToString(), [.. Enumerable.Range(0, g.Outputs.Count).Select(i => $"o{i}")], plan);
        return null;
    }

    /// <summary>
    /// A node with no planned kernel inside planned code: its inputs as tensors (planned spans copied into new ones),
    /// one call of its operator entry (as unplanned code runs it), its outputs kept as the tensors it returns.
    /// </summary>
    private void EmitFallbackCall(CodeWriter w, Node n, IPlannedCodeBackend backend, IReadOnlyList<PlannedOperand?> ins, IReadOnlyList<PlannedOperand?> outs)
    {
        var args = ins.Select(op => op is null ? "null" : backend.EmitTensorOf(w, op, Fresh("copy_" + CSharp.Identifier(op.Value.Name).TrimStart('@')))).ToList();
        var results = outs.Select(op => op is null ? "_" : op.Local + "_result").ToList();
        _backend.EmitNode(new NodeEmitContext(this, n, w, i => i < args.Count ? args[i] : "null", i => results[i]));
        foreach (var op in outs)
            if (op is not null) w.Line($"var {op.Local} = (Tensor){op.Local}_result!;");
        _genericCalls++;
    }
}
