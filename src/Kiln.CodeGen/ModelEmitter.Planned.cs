using System.Globalization;
using Kiln.CodeGen.Backends;
using Kiln.Ir;
using Kiln.Ir.Analysis;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen;

/// <summary>
/// Planned emission: when the backend has a planned kernel for every node the outputs need, the model runs with
/// every intermediate value in a slot of one activation arena. Slots come from liveness analysis over the node
/// order (a value's slot is free again after its last reader, views included; a later value of the same size
/// expression takes it first), their sizes are expressions in the input symbols evaluated once per call, and
/// reshapes are views. Outputs are written straight into the returned tensors. For decoders, a second entry
/// (<c>Step</c>) writes new keys and values into a caller-owned KV cache and the logits into a caller-owned span:
/// nothing is allocated per token.
/// </summary>
public sealed partial class ModelEmitter
{
    private enum PlanMode { Run, Step }

    /// <summary>The code of a planned body and what it produced.</summary>
    private sealed record PlannedCode(string Code, IReadOnlyList<string> Returns, int Values, int Slots, IReadOnlyList<string> Plan);

    private static readonly HashSet<string> ViewOps = ["Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"];

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
        if (g.Nodes.Any(n => n.Subgraphs.Any())) return "the graph has control flow";
        var outputs = g.Outputs.Select(o => o.Value).ToHashSet();
        var (computed, needed) = Plan(g, outputs);
        var order = g.Nodes.Where(needed.Contains).ToList();
        var operands = new Dictionary<Value, PlannedOperand>();
        var root = new Dictionary<Value, Value>();
        var knownLines = new List<string>();
        var local = 0;
        Node? logitsNode = null;

        string? Dims(Value v, out string[] dims)
        {
            dims = [];
            // f16 is read only as constants (quantization scales): no planned kernel computes f16 values.
            if (v.TensorType is not { Shape: { } shape } tt || PlannedOperand.ClrTypeOf(tt.Elem) == "" && !(v.Kind == ValueKind.Constant && tt.Elem == ElementType.F16))
                return $"'{v.Name}' is not a numeric tensor of known rank";
            var list = new List<string>();
            foreach (var d in shape.Dims)
            {
                if (d.Value is { } c) { list.Add(c.ToString(CultureInfo.InvariantCulture)); continue; }
                if (d.IsUnknown || d.Symbols.Any(s => !_symbolLocals.ContainsKey(s))) return $"'{v.Name}' has a dim the inputs do not determine";
                list.Add("(int)(" + d.ToExpression(s => _symbolLocals[s]) + ")");
            }
            dims = [.. list];
            return null;
        }

        PlannedOperand? Operand(Value v, out string? why)
        {
            why = null;
            if (operands.TryGetValue(v, out var known)) return known;
            string[] dims;
            switch (v.Kind)
            {
                case ValueKind.Constant:
                    if ((why = Dims(v, out dims)) is not null) return null;
                    var field = NameOf(v);
                    var clr = v.TensorType!.Elem == ElementType.F16 ? "Half" : PlannedOperand.ClrTypeOf(v.TensorType.Elem);
                    return operands[v] = new PlannedOperand(v, v.TensorType!.Elem, dims, $"{field}.Span<{clr}>()", PlannedStorage.Constant, field, null);
                case ValueKind.GraphInput:
                    if ((why = Dims(v, out dims)) is not null) return null;
                    if (mode == PlanMode.Step)
                    {
                        var index = g.Inputs.IndexOf(v);
                        if (index == io!.InputIds) return operands[v] = new PlannedOperand(v, ElementType.I64, dims, "tokens", PlannedStorage.Input, null, null);
                        if (io.PastKeys.Contains(index) || io.PastValues.Contains(index)) return operands[v] = new PlannedOperand(v, ElementType.F32, dims, "", PlannedStorage.KvPast, null, null);
                        why = $"input '{v.Name}' has no place in a decoding step";
                        return null;
                    }
                    if (v.Data is not null) { why = $"input '{v.Name}' has a default"; return null; }
                    return operands[v] = new PlannedOperand(v, v.TensorType!.Elem, dims, $"{NameOf(v)}.Span<{PlannedOperand.ClrTypeOf(v.TensorType.Elem)}>()", PlannedStorage.Input, null, null);
                default:
                    if (computed.Contains(v) && _known.TryGetValue(v, out var k))
                    {
                        var name = $"k{local++}";
                        var values = k.Values.Select(d => d.ToExpression(s => _symbolLocals[s])!);
                        knownLines.Add($"// %{CSharp.Comment(v.Name)} = {CSharp.Comment(FormatKnown(k))}, from the input dims");
                        knownLines.Add($"Span<long> {name} = stackalloc long[] {{ {string.Join(", ", values)} }};");
                        return operands[v] = new PlannedOperand(v, ElementType.I64, [.. k.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture))], name, PlannedStorage.Known, null, null);
                    }
                    why = $"'{v.Name}' is read before it is computed";
                    return null;
            }
        }

        // Outputs of every needed node: views share their input's span; the rest get a storage below.
        foreach (var n in order)
        {
            var ins = new List<PlannedOperand?>();
            foreach (var v in n.Inputs)
            {
                if (v is null) { ins.Add(null); continue; }
                var op = Operand(v, out var why);
                if (op is null) return why;
                ins.Add(op);
            }
            if (n.Outputs.Length != 1 || n.Outputs[0] is not { } o) return $"node '{n.Name}' ({n.QualifiedOp}) has several outputs";
            var whyDims = Dims(o, out var dims);
            if (whyDims is not null) return whyDims;
            var elem = o.TensorType!.Elem;
            if (ViewOps.Contains(n.Op) && n.Domain == "" && ins[0] is { } src && src.Elem == elem && src.Storage is not (PlannedStorage.KvPast or PlannedStorage.KvCache))
            {
                operands[o] = new PlannedOperand(o, elem, dims, src.Span, PlannedStorage.Alias, src.WeightField, null);
                root[o] = root.GetValueOrDefault(src.Value, src.Value);
                continue;
            }
            var placeholder = new PlannedOperand(o, elem, dims, $"v{local++}", PlannedStorage.Arena, null, null);
            operands[o] = placeholder;
            if (ins.Any(x => x?.Storage == PlannedStorage.KvPast) && !(mode == PlanMode.Step && n.Op == "Concat" && n.Inputs.Count == 2 && ins[0]?.Storage == PlannedStorage.KvPast))
                return $"node '{n.Name}' reads the past keys or values";
            var unsupported = backend.UnsupportedPlanned(new PlannedNodeContext(n, new CodeWriter(), ins, [placeholder]));
            if (unsupported is not null) return $"node '{n.Name}' ({n.QualifiedOp}): {unsupported}";
        }
        Value Root(Value v) => root.GetValueOrDefault(v, v);

        // Where outputs live.
        var outputTensors = new Dictionary<Value, string>();   // arena-candidate value → output tensor local
        var outputValueOf = new Dictionary<Value, Value>();    // that value → the graph output it becomes
        var copies = new List<(int Index, Value Value)>();
        var pinnedToEnd = new HashSet<Value>();
        if (mode == PlanMode.Run)
        {
            for (var i = 0; i < g.Outputs.Count; i++)
            {
                var v = g.Outputs[i].Value;
                var r = Root(v);
                if (operands.TryGetValue(r, out var ro) && ro.Storage == PlannedStorage.Arena && !outputTensors.ContainsKey(r) && ro.Elem == operands[v].Elem)
                {
                    outputTensors[r] = $"o{i}";
                    outputValueOf[r] = v;
                    operands[r] = ro with { Storage = PlannedStorage.Output };
                }
                else
                {
                    if (!operands.ContainsKey(v) && Operand(v, out var why) is null) return why;
                    copies.Add((i, v));
                    pinnedToEnd.Add(r);
                }
            }
        }
        else
        {
            var io2 = io!;
            var logits = Root(g.Outputs[io2.Logits].Value);
            if (!operands.TryGetValue(logits, out var lo) || lo.Storage != PlannedStorage.Arena || lo.Elem != ElementType.F32) return "the logits are not computed by a planned node";
            // Only-the-last-positions needs the rows of the classifier's input: a plain product with a weight.
            if (logits.Producer is not { } cls || !(cls.QualifiedOp is "MatMul" || cls.QualifiedOp == "Gemm" && cls.Inputs.Count < 3
                || cls.QualifiedOp == KilnOp.Qualified.QuantizedMatMul && (cls.Inputs.Count < 5 || cls.Inputs[4] is null) && cls.Attr<StringAttr>("activation") is not { Value.Length: > 0 }))
                return "the logits are not one product with the classifier weight";
            logitsNode = cls;
            operands[logits] = lo with { Span = "logits", Storage = PlannedStorage.Logits };
            var covered = new HashSet<int> { io2.Logits };
            // quantize-kv: the cache holds int8 when every attention reading a present asks for it (one cache, one format).
            var presents = io2.PresentKeys.Concat(io2.PresentValues).Select(i => g.Outputs[i].Value).ToList();
            var readers = presents.SelectMany(v => v.Uses.Where(u => needed.Contains(u.Node)).Select(u => u.Node)).ToList();
            var int8Cache = readers.Count > 0 && readers.All(r => r.QualifiedOp == KilnOp.Qualified.GroupQueryAttention && r.Attr<IntAttr>("kv_bits")?.Value == 8);
            _stepKvBits = int8Cache ? 8 : 32;
            for (var layer = 0; layer < io2.PresentKeys.Length; layer++)
                foreach (var (outIndex, pastIndex, which) in new[] { (io2.PresentKeys[layer], io2.PastKeys[layer], "Keys"), (io2.PresentValues[layer], io2.PastValues[layer], "Values") })
                {
                    covered.Add(outIndex);
                    var v = g.Outputs[outIndex].Value;
                    if (v.Producer is not { Op: "Concat" } cat || cat.Inputs[0] != g.Inputs[pastIndex] || !operands.TryGetValue(v, out var pv) || pv.Storage != PlannedStorage.Arena)
                        return $"present output '{g.Outputs[outIndex].Name}' is not its past with the new positions appended";
                    var axis = cat.AttrInt("axis");
                    if (axis != 2 && axis != -2) return $"'{cat.Name}' appends along axis {axis}, not the sequence axis";
                    if (v.Uses.Any(u => needed.Contains(u.Node) && !(u.Node.QualifiedOp == KilnOp.Qualified.GroupQueryAttention && u.Index is 1 or 2)))
                        return $"present '{v.Name}' is read by something other than attention";
                    operands[v] = int8Cache
                        ? pv with { Span = $"cache.{which[..^1]}Codes({layer})", KvScales = $"cache.{which[..^1]}Scales({layer})", Storage = PlannedStorage.KvCache, HeadStride = $"cache.Capacity * {pv.Dims[3]}" }
                        : pv with { Span = $"cache.{which}({layer})", Storage = PlannedStorage.KvCache, HeadStride = $"cache.Capacity * {pv.Dims[3]}" };
                }
            if (covered.Count != g.Outputs.Count) return "the decoder has outputs besides logits and presents";
        }

        // Elementwise chains: a f32 elementwise node whose value only feeds the next one (same dims) is computed
        // inside that node's loop and never stored. A chain runs where its last node stands.
        var index = order.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        var outputValues = g.Outputs.Select(o => o.Value).ToHashSet();
        bool IsOne(PlannedOperand op) => op.Dims.All(d => d == "1");
        bool Fusable(Node n) => n.Outputs.Length == 1 && n.Outputs[0] is { } o && operands.TryGetValue(o, out var oo) && oo.Elem == ElementType.F32
            && oo.Storage is not PlannedStorage.Alias && backend.IsFusableElementwise(n)
            && n.Inputs.All(v => v is not null && operands.TryGetValue(v, out var iop) && iop.Elem == ElementType.F32 && iop.Storage is not (PlannedStorage.KvPast or PlannedStorage.KvCache)
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
        int Position(Node n) => index[ChainEnd(n)];

        // Liveness: a slot is busy from its value's node to the last reader of the value or of any view of it
        // (a reader inside an elementwise chain reads where the chain runs).
        var lastUse = Liveness.LastReads(g, order, Position, Root);
        foreach (var v in pinnedToEnd) lastUse[v] = int.MaxValue;
        var slots = new List<(List<string> Sizes, int FreeAfter)>();
        var slotOf = new Dictionary<Value, int>();
        foreach (var n in order)
        {
            var o = n.Outputs[0]!;
            if (operands[o].Storage != PlannedStorage.Arena) continue;
            var i = index[n];
            var op = operands[o];
            var bytes = $"(long){op.Count} * {ElementBytes(op.Elem)}";
            // A slot is free for this node's output once every reader of its last value ran before this node.
            var free = Enumerable.Range(0, slots.Count).Where(s => slots[s].FreeAfter < i).ToList();
            var pick = free.FirstOrDefault(s => slots[s].Sizes.Contains(bytes), free.Count > 0 ? free[0] : -1);
            if (pick < 0) { slots.Add(([], -1)); pick = slots.Count - 1; }
            if (!slots[pick].Sizes.Contains(bytes)) slots[pick].Sizes.Add(bytes);
            slots[pick] = (slots[pick].Sizes, lastUse.GetValueOrDefault(o, i));
            slotOf[o] = pick;
        }

        var w = new CodeWriter { Indent = indent };
        w.Line($"// Activation arena: {slotOf.Count} values in {slots.Count} slots (liveness over {order.Count} nodes); sizes from this call's dims.");
        // A step sizes its slots for the longest context the cache allows (sizes only grow with the dims), so the
        // arena is reserved once per session instead of growing with every few tokens.
        var pastLocal = mode == PlanMode.Step && _stepPastSymbol is { } ps ? _symbolLocals[ps] : null;
        if (pastLocal is not null) w.Line($"long longest_{pastLocal} = cache.Capacity - seq;");
        for (var s = 0; s < slots.Count; s++)
        {
            var sizes = slots[s].Sizes;
            var max = sizes[0];
            for (var k = 1; k < sizes.Count; k++) max = $"Math.Max({max}, {sizes[k]})";
            if (pastLocal is not null) max = System.Text.RegularExpressions.Regex.Replace(max, $@"\b{pastLocal}\b", "longest_" + pastLocal);
            w.Line($"long size{s} = ActivationArena.Align({max});");
        }
        if (slots.Count > 0)
        {
            w.Line($"_arena.Reserve({string.Join(" + ", Enumerable.Range(0, slots.Count).Select(s => $"size{s}"))});");
            for (var s = 0; s < slots.Count; s++) w.Line($"long slot{s} = {(s == 0 ? "0" : $"slot{s - 1} + size{s - 1}")};");
        }
        if (mode == PlanMode.Step)
        {
            var lo = operands[Root(g.Outputs[io!.Logits].Value)];
            var wanted = $"(lastPositionOnly ? batch * {io.Vocabulary} : {lo.Count})";
            w.Line($"if (logits.Length != {wanted}) throw new ArgumentException($\"logits need {{{wanted}}} floats, got {{logits.Length}}\");");
        }
        foreach (var line in knownLines) w.Line(line);
        // KILN_PROFILE: time per node (Generated.ProfileByNode); 0 when off, so each node then costs one test.
        w.Line("long profiled = Generated.NodeProfileStart();");
        foreach (var n in order)
        {
            var o = n.Outputs[0]!;
            var op = operands[o];
            var note = op.Storage switch { PlannedStorage.Alias => " (a view of its input)", PlannedStorage.Fused => " (computed in the loop of the node it feeds)", _ => "" };
            w.Line($"// {CSharp.Comment(n.Name ?? "#" + n.Index)}: {n.QualifiedOp} → %{CSharp.Comment(o.Name)}{note}");
            if (op.Storage is PlannedStorage.Alias or PlannedStorage.Fused) continue;
            w.Line($"at = {NodeId(n)};");
            switch (op.Storage)
            {
                case PlannedStorage.Arena:
                    w.Line($"var {op.Span} = _arena.Slot<{op.ClrType}>(slot{slotOf[o]}, {op.Count});");
                    break;
                case PlannedStorage.Output:
                    var t = outputTensors[o];
                    var od = operands[outputValueOf[o]];
                    w.Line($"var {t} = Tensor.Uninitialized(DType.{DTypeName(od.Elem)}, new int[] {{ {string.Join(", ", od.Dims)} }});");
                    w.Line($"var {op.Span} = {t}.Span<{op.ClrType}>();");
                    break;
            }
            if (fusedInto.ContainsValue(n)) backend.EmitElementwiseLoop(w, ChainSteps(n), Resolve(o));
            else
            {
                var ctx = new PlannedNodeContext(n, w, n.Inputs.Select(v => v is null ? null : Resolve(v)).ToList(), [Resolve(o)])
                {
                    LastRowsOnly = n == logitsNode ? "lastPositionOnly" : null,
                };
                backend.EmitPlanned(ctx);
            }
            w.Line("if (profiled != 0) profiled = Generated.NodeProfileEnd(profiled, NodeNames[at], NodeOps[at], NodeInputs[at]);");
        }
        foreach (var (i, v) in copies)
        {
            var op = Resolve(v);
            w.Line($"var o{i} = Tensor.Uninitialized(DType.{DTypeName(op.Elem)}, new int[] {{ {string.Join(", ", op.Dims)} }});");
            w.Line($"{op.Span}.CopyTo(o{i}.Span<{op.ClrType}>());");
        }
        result = new PlannedCode(w.ToString(), [.. Enumerable.Range(0, g.Outputs.Count).Select(i => $"o{i}")], slotOf.Count, slots.Count, PlanLines());
        return null;

        // The plan as text (kiln dump --plan, the compile report): where each computed value lives, and the chains.
        List<string> PlanLines()
        {
            var ends = order.Where(n => fusedInto.ContainsValue(n)).ToList();
            var views = order.Count(n => operands[n.Outputs[0]!].Storage == PlannedStorage.Alias);
            var lines = new List<string> { $"{mode.ToString().ToLowerInvariant()}: {order.Count} nodes, {slotOf.Count} values in {slots.Count} arena slots, {views} views, {ends.Count} elementwise chains" };
            foreach (var n in order)
            {
                var o = n.Outputs[0]!;
                var where = operands[o].Storage switch
                {
                    PlannedStorage.Arena => $"slot {slotOf[o]}",
                    PlannedStorage.Output => $"output '{outputValueOf[o].Name}'",
                    PlannedStorage.Alias => $"view of %{Root(o).Name}",
                    PlannedStorage.Fused => $"in chain {ends.IndexOf(ChainEnd(n))}",
                    PlannedStorage.Logits => "the caller's logits span",
                    PlannedStorage.KvCache => "the KV cache, in place",
                    var other => other.ToString().ToLowerInvariant(),
                };
                lines.Add($"  %{o.Name}: {o.Type} {where} = {n.QualifiedOp}");
            }
            for (var c = 0; c < ends.Count; c++)
            {
                var members = ChainMembers(ends[c]);
                lines.Add($"  chain {c}: {string.Join("·", members.Select(m => m.Op))} → one loop writing %{ends[c].Outputs[0]!.Name}");
            }
            return lines;
        }

        // The nodes of the chain ending at `end`, in graph order.
        List<Node> ChainMembers(Node end) => order.Where(m => m == end || fusedInto.ContainsKey(m) && ChainEnd(m) == end).ToList();

        // The chain's steps, each reading operands or earlier steps.
        List<ElementwiseStep> ChainSteps(Node end)
        {
            var members = ChainMembers(end);
            var steps = new List<ElementwiseStep>();
            foreach (var m in members)
            {
                var args = m.Inputs.Select(v =>
                {
                    if (v!.Producer is { } p && fusedInto.ContainsKey(p) && members.Contains(p)) return new ElementwiseArg(null, false, members.IndexOf(p));
                    var op = Resolve(v);
                    return new ElementwiseArg(op, IsOne(op), -1);
                }).ToList();
                steps.Add(new ElementwiseStep(m, args));
            }
            return steps;
        }

        // A view's span is its root's (declared under the root's local name).
        PlannedOperand Resolve(Value v)
        {
            var op = operands[v];
            if (op.Storage != PlannedStorage.Alias) return op;
            var r = operands[Root(v)];
            return op with { Span = r.Span, WeightField = r.WeightField };
        }
    }

    private static int ElementBytes(ElementType e) => e.Bits() / 8;
}
