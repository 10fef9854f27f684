using System.Globalization;
using Kiln.CodeGen.Backends;
using Kiln.Ir;
using Kiln.Ir.Analysis;
using Kiln.Ir.Inference;
using Kiln.Ir.Ops;

namespace Kiln.CodeGen.Planning;

/// <summary>What planning reads from the class being written: the graph, which values the input dims determine, and the names the class gives symbols, inputs and constants.</summary>
/// <param name="Computed">values computed from the input dims (shape arithmetic), never run as nodes</param>
/// <param name="Needed">the nodes some output needs</param>
/// <param name="SymbolLocals">each bound symbol's C# local</param>
/// <param name="NameOf">an input's parameter or a constant's field</param>
/// <param name="PastSymbol">for a step: the symbol bound to the cache's length, when there is one</param>
public sealed record PlanInputs(Graph Graph, PlanMode Mode, DecoderIo? Io, IReadOnlySet<Value> Computed, IReadOnlySet<Node> Needed,
    IReadOnlyDictionary<string, string> SymbolLocals, IReadOnlyDictionary<Value, SymbolicTensor> Known, Func<Value, string> NameOf, string? PastSymbol);

/// <summary>
/// The memory plan: every intermediate value in a slot of one activation arena. Slots come from liveness over the
/// node order (a value's slot is free again after its last reader, views included; a later value of the same size
/// takes it first); sizes are expressions in the input symbols. <see cref="OpTraits.View"/> nodes share their input's
/// storage; outputs are written in place. Knows ops only through registry traits and the backend's answers.
/// </summary>
public sealed class MemoryPlanner
{
    private readonly PlanInputs _in;
    private readonly IPlannedCodeBackend _backend;
    private readonly Dictionary<Value, PlannedOperand> _operands = [];
    private readonly List<Value> _known = [];
    private readonly List<PlanFallback> _fallbacks = [];
    private readonly Dictionary<string, string> _dimLocalByExpression = new(StringComparer.Ordinal);
    private readonly List<(string Name, string Expression)> _dimLocals = [];
    private int _local;

    private MemoryPlanner(PlanInputs inputs, IPlannedCodeBackend backend) => (_in, _backend) = (inputs, backend);

    /// <summary>
    /// The plan, or null with why the graph cannot be planned in this mode. Nodes without a planned kernel do not stop
    /// planning: each runs through its operator entry where it stands (<see cref="MemoryPlan.Fallbacks"/>).
    /// </summary>
    public static MemoryPlan? Plan(PlanInputs inputs, IPlannedCodeBackend backend, out string? why)
    {
        var planner = new MemoryPlanner(inputs, backend);
        var plan = planner.Build(out why);
        return why is null ? plan : null;
    }

    private MemoryPlan? Build(out string? why)
    {
        var g = _in.Graph;
        why = null;
        if (g.Nodes.Any(n => n.Subgraphs.Any())) { why = "the graph has control flow"; return null; }
        var order = g.Nodes.Where(_in.Needed.Contains).ToList();

        // Outputs of every needed node: views share their input's storage; the rest get a storage below.
        foreach (var n in order)
        {
            var ins = new List<PlannedOperand?>();
            foreach (var v in n.Inputs)
            {
                if (v is null) { ins.Add(null); continue; }
                var op = Operand(v, out why);
                if (op is null) return null;
                ins.Add(op);
            }
            var outs = new List<PlannedOperand?>();
            foreach (var o in n.Outputs)
            {
                if (o is null) { outs.Add(null); continue; }
                if ((why = Dims(o, out var dims)) is not null) return null;
                outs.Add(new PlannedOperand(o, o.TensorType!.Elem, dims, PlannedStorage.Arena));
            }
            if (outs.Count == 1 && outs[0] is { } only && n.Has(OpTraits.View) && ins[0] is { } src && src.Elem == only.Elem
                && src.Storage is not (PlannedStorage.KvPast or PlannedStorage.KvCache))
            {
                _operands[only.Value] = only with { Storage = PlannedStorage.Alias, ViewOf = src.ViewOf ?? src.Value };
                continue;
            }
            for (var k = 0; k < outs.Count; k++)
                if (outs[k] is { } o) _operands[o.Value] = outs[k] = o with { Local = $"v{_local++}" };
            if (ins.Any(x => x?.Storage == PlannedStorage.KvPast) && !(_in.Mode == PlanMode.Step && DecoderConvention.MayReadPast(n, ins)))
            {
                why = $"node '{n.Name}' reads the past keys or values";
                return null;
            }
            // A node the backend cannot plan runs through its operator entry inside the planned code: its outputs are
            // the tensors the entry returns. Every such node is listed (plan, report), not just the first.
            var unsupported = outs.All(o => o is null) ? "it has no output" : _backend.UnsupportedPlanned(new PlannedNodeContext(n, new CodeWriter(), ins, outs));
            if (unsupported is null) continue;
            _fallbacks.Add(new PlanFallback(n, unsupported));
            foreach (var o in outs) if (o is not null) _operands[o.Value] = o with { Storage = PlannedStorage.Fallback, Local = "t" + o.Local };
        }

        var copies = new List<(int Index, Value Value)>();
        var pinnedToEnd = new HashSet<Value>();
        Node? logitsNode = null;
        if (_in.Mode == PlanMode.Run)
        {
            // Where outputs live: written in place into the returned tensor, or copied there at the end.
            for (var i = 0; i < g.Outputs.Count; i++)
            {
                var v = g.Outputs[i].Value;
                var r = Root(v);
                if (_operands.TryGetValue(r, out var ro) && ro.Storage == PlannedStorage.Arena && ro.OutputIndex < 0 && ro.Elem == _operands[v].Elem)
                    _operands[r] = ro with { Storage = PlannedStorage.Output, OutputIndex = i, OutputDims = _operands[v].Dims };
                else
                {
                    if (!_operands.ContainsKey(v) && Operand(v, out why) is null) return null;
                    copies.Add((i, v));
                    pinnedToEnd.Add(r);
                }
            }
        }
        else
        {
            if ((why = DecoderConvention.PlaceOutputs(g, _in.Io!, _operands, Root, _in.Needed, _backend, out logitsNode)) is not null) return null;
            // The KV cache holds a layer's positions at its capacity's stride: an operator entry could not read it as a tensor.
            if (_fallbacks.FirstOrDefault(f => f.Node.Inputs.Any(v => v is not null && _operands[Root(v)].Storage == PlannedStorage.KvCache)) is { } reader)
            {
                why = $"node '{reader.Node.Name}' ({reader.Node.QualifiedOp}) reads the KV cache but has no planned kernel";
                return null;
            }
        }

        var chains = ElementwiseChains.Find(g, order, _in.Needed, _operands, _backend);
        var slotSizes = AssignSlots(order, chains, pinnedToEnd);
        var longest = _in.Mode == PlanMode.Step && _in.PastSymbol is { } ps ? ("longest_" + _in.SymbolLocals[ps], "cache.Capacity - seq") : ((string, string)?)null;
        return new MemoryPlan
        {
            Mode = _in.Mode, Graph = g, Order = order, Values = _operands, SlotSizes = slotSizes, Chains = chains, Copies = copies,
            Known = [.. _known.Where(v => ReadByAKernel(v) || copies.Any(c => Root(c.Value) == v))], LogitsNode = logitsNode, Longest = longest, DimLocals = _dimLocals,
            Fallbacks = _fallbacks,
        };
    }

    // A shape read only by views (Reshape's target), and not an output, needs no storage: the view is the same span under the plan's dims.
    private bool ReadByAKernel(Value v) =>
        v.Uses.Any(u => _in.Needed.Contains(u.Node) && u.Node.Outputs.Any(o => o is not null && _operands.TryGetValue(o, out var op) && op.Storage != PlannedStorage.Alias));

    private Value Root(Value v) => _operands.TryGetValue(v, out var op) && op.ViewOf is { } r ? r : v;

    /// <summary>
    /// Arena slots by liveness: a slot is busy from its value's node to the last reader of the value or of any view of
    /// it (a reader inside an elementwise chain reads where the chain runs). A step sizes its slots for the longest
    /// context the cache allows (sizes only grow with the dims), so its arena is reserved once per session.
    /// </summary>
    private List<IReadOnlyList<string>> AssignSlots(List<Node> order, List<ElementwiseChain> chains, HashSet<Value> pinnedToEnd)
    {
        var index = order.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        var chainEnd = chains.SelectMany(c => c.Members.Select(m => (m, c.End))).ToDictionary(x => x.m, x => x.End);
        int Position(Node n) => index[chainEnd.GetValueOrDefault(n, n)];
        var lastUse = Liveness.LastReads(_in.Graph, order, Position, Root);
        foreach (var v in pinnedToEnd) lastUse[v] = int.MaxValue;
        var longestLocals = _in.Mode == PlanMode.Step && _in.PastSymbol is { } past
            ? _in.SymbolLocals.ToDictionary(x => x.Key, x => x.Key == past ? "longest_" + x.Value : x.Value, StringComparer.Ordinal)
            : _in.SymbolLocals;
        var slots = new List<(List<string> Sizes, int FreeAfter)>();
        foreach (var (n, o) in order.SelectMany(n => n.Outputs.OfType<Value>().Select(o => (n, o))))
        {
            var op = _operands[o];
            if (op.Storage != PlannedStorage.Arena) continue;
            var i = index[n];
            DimExpressions(o, longestLocals, "max_", out var sizeDims);
            var bytes = SizeExpression(sizeDims, op.Elem.Bits() / 8);
            // A slot is free for this node's output once every reader of its last value ran before this node.
            var free = Enumerable.Range(0, slots.Count).Where(s => slots[s].FreeAfter < i).ToList();
            var pick = free.FirstOrDefault(s => slots[s].Sizes.Contains(bytes), free.Count > 0 ? free[0] : -1);
            if (pick < 0) { slots.Add(([], -1)); pick = slots.Count - 1; }
            if (!slots[pick].Sizes.Contains(bytes)) slots[pick].Sizes.Add(bytes);
            slots[pick] = (slots[pick].Sizes, lastUse.GetValueOrDefault(o, i));
            _operands[o] = op with { Slot = pick };
        }
        return [.. slots.Select(s => (IReadOnlyList<string>)s.Sizes)];
    }

    private string? Dims(Value v, out string[] dims)
    {
        dims = [];
        // f16 and u32 are read only as constants (quantization scales, sparse masks): no planned kernel computes them.
        if (v.TensorType is not { Shape: not null } tt || PlannedOperand.ClrTypeOf(tt.Elem) == "" && !(v.Kind == ValueKind.Constant && tt.Elem is DType.F16 or DType.U32))
            return $"'{v.Name}' is not a numeric tensor of known rank";
        return DimExpressions(v, _in.SymbolLocals, "n_", out dims);
    }

    /// <summary>A value's size in bytes as a long expression: the constant factors multiplied out, then the dims' locals.</summary>
    private static string SizeExpression(string[] dims, int elementBytes)
    {
        var constant = (long)elementBytes;
        var symbolic = new List<string>();
        foreach (var d in dims)
            if (long.TryParse(d, NumberStyles.Integer, CultureInfo.InvariantCulture, out var c)) constant *= c;
            else symbolic.Add(d);
        return string.Join(" * ", symbolic.Prepend(constant.ToString(CultureInfo.InvariantCulture) + "L"));
    }

    /// <summary>
    /// The dims as C# int expressions: literals, or an int local hoisted once per entry for each distinct symbolic dim
    /// (named after the dim: <c>n_batch</c>, <c>n_past_seq_plus_seq</c>); or why the inputs do not determine one.
    /// </summary>
    private string? DimExpressions(Value v, IReadOnlyDictionary<string, string> locals, string prefix, out string[] dims)
    {
        dims = [];
        var list = new List<string>();
        foreach (var d in v.TensorType!.Shape!.Dims)
        {
            if (d.Value is { } c) { list.Add(c.ToString(CultureInfo.InvariantCulture)); continue; }
            if (d.IsUnknown || d.Symbols.Any(s => !locals.ContainsKey(s))) return $"'{v.Name}' has a dim the inputs do not determine";
            var expression = d.ToExpression(s => locals[s])!;
            if (!_dimLocalByExpression.TryGetValue(expression, out var local))
            {
                local = UniqueDimLocal(prefix + CSharp.IdentifierWords(d.ToString()));
                _dimLocals.Add((local, $"(int)({expression})"));
                _dimLocalByExpression[expression] = local;
            }
            list.Add(local);
        }
        dims = [.. list];
        return null;
    }

    private string UniqueDimLocal(string stem)
    {
        var name = stem;
        for (var k = 2; _dimLocals.Any(x => x.Name == name) || _in.SymbolLocals.Values.Contains(name); k++) name = stem + "_" + k;
        return name;
    }

    /// <summary>The operand of a value read by a planned node (an input, a constant, a computed dim value, or an earlier node's output).</summary>
    private PlannedOperand? Operand(Value v, out string? why)
    {
        why = null;
        if (_operands.TryGetValue(v, out var known)) return known;
        string[] dims;
        switch (v.Kind)
        {
            case ValueKind.Constant:
                if ((why = Dims(v, out dims)) is not null) return null;
                return _operands[v] = new PlannedOperand(v, v.TensorType!.Elem, dims, PlannedStorage.Constant) { WeightField = _in.NameOf(v) };
            case ValueKind.GraphInput:
                if ((why = Dims(v, out dims)) is not null) return null;
                if (_in.Mode == PlanMode.Step)
                {
                    if (DecoderConvention.InputStorage(_in.Graph, _in.Io!, v) is not { } storage) { why = $"input '{v.Name}' has no place in a decoding step"; return null; }
                    return _operands[v] = new PlannedOperand(v, storage == PlannedStorage.Tokens ? DType.I64 : DType.F32, dims, storage);
                }
                if (v.Data is not null) { why = $"input '{v.Name}' has a default"; return null; }
                return _operands[v] = new PlannedOperand(v, v.TensorType!.Elem, dims, PlannedStorage.Input) { Local = _in.NameOf(v) };
            default:
                if (_in.Computed.Contains(v) && _in.Known.TryGetValue(v, out var k))
                {
                    _known.Add(v);
                    return _operands[v] = new PlannedOperand(v, DType.I64, [.. k.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture))], PlannedStorage.Known) { Local = $"k{_local++}" };
                }
                why = $"'{v.Name}' is read before it is computed";
                return null;
        }
    }
}
