using Kiln.CodeGen.Backends;
using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Ir.Analysis;
using Kiln.Ir.Diagnostics;
using Kiln.Ir.Ops;

namespace Kiln.CodeGen;

/// <summary>
/// Emits one C# class for a graph: a typed <c>Run</c> over tensors named after the model's inputs and outputs, an
/// untyped <see cref="Runtime.Compiled.ICompiledModel"/> face for tools, constants loaded from the weight blob,
/// attribute values baked in as literals, subgraphs as lambdas, and one statement group per node (commented with
/// the node's name and op) written by the backend. Errors at run time name the node that failed.
/// </summary>
public sealed partial class ModelEmitter
{
    private readonly Graph _graph;
    private readonly EmitOptions _options;
    private readonly ICodeBackend _backend;
    private readonly Dictionary<Value, string> _names = [];
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);
    private readonly List<(string Type, string Name, string Init)> _statics = [];
    private readonly Dictionary<string, string> _staticByInit = new(StringComparer.Ordinal);
    private readonly List<(string Field, string Init, string Comment)> _weightFields = [];
    private readonly List<BlobTensor> _weights = [];
    private readonly List<Node> _nodes = [];
    private int _locals;
    private int _genericCalls;

    // Shape arithmetic inference resolved in terms of the inputs' symbolic dims: computed from those dims once per
    // call instead of running the Shape → Gather → Concat nodes that produce it.
    private IReadOnlyDictionary<Value, Kiln.Ir.Inference.SymbolicTensor> _known = new Dictionary<Value, Kiln.Ir.Inference.SymbolicTensor>();
    private readonly Dictionary<string, string> _symbolLocals = new(StringComparer.Ordinal);

    public ModelEmitter(Graph graph, EmitOptions options, ICodeBackend backend)
    {
        _graph = graph;
        _options = options;
        _backend = backend;
    }

    public EmittedModel Emit()
    {
        var problems = _graph.AllGraphs().SelectMany(g => g.Nodes).Select(n => (n, why: _backend.Unsupported(n))).Where(x => x.why is not null).ToList();
        if (problems.Count > 0)
            throw new KilnException(problems.Select(p => new Diagnostic(DiagnosticCode.UnsupportedOp,
                $"the {_backend.Name} backend cannot compile this node: {p.why}", _options.SourceName, p.n.Name, p.n.Index, p.n.QualifiedOp)).ToList());
        foreach (var g in _graph.AllGraphs())
            foreach (var c in g.Constants) DeclareConstant(c);
        _known = Kiln.Ir.Inference.ShapeInference.RunAndCollectKnown(_graph);

        var body = new CodeWriter { Indent = 3 };
        var inputs = EmitInputs(body);
        body.Line("var at = -1;");
        body.Open("try");
        var planner = _backend as IPlannedCodeBackend;
        PlannedCode? run = null, step = null;
        var whyNotPlanned = planner is null ? $"the {_backend.Name} backend plans no code" : TryPlan(PlanMode.Run, planner, null, body.Indent, out run);
        if (run is not null)
        {
            body.Raw(run.Code);
            body.Line("return new object?[] { " + string.Join(", ", run.Returns) + " };");
        }
        else
        {
            EmitGraphBody(_graph, body);
            body.Line("return new object?[] { " + string.Join(", ", _graph.Outputs.Select(o => NameOf(o.Value))) + " };");
        }
        body.Close();
        EmitFailureHandler(body);

        string? whyNoStep = null;
        CodeWriter? stepBody = null;
        var io = DecoderConvention.Of(_graph);
        if (run is not null && io is not null)
        {
            stepBody = new CodeWriter { Indent = 3 };
            whyNoStep = StepPrologue(io, stepBody);
            if (whyNoStep is null)
            {
                stepBody.Line("var at = -1;");
                stepBody.Open("try");
                whyNoStep = TryPlan(PlanMode.Step, planner!, io, stepBody.Indent, out step);
                if (step is not null) stepBody.Raw(step.Code);
                stepBody.Close();
                EmitFailureHandler(stepBody);
            }
        }
        var activations = run is null
            ? $"allocated per call from the model's tensor pool (not planned: {whyNotPlanned})"
            : $"one arena: {run.Plan.ArenaValues} values in {run.Plan.SlotSizes.Count} slots, sizes computed from the input dims once per call" +
              (step is not null ? "; decoding step planned (KV cache written in place, no allocation per token)" : io is not null ? $"; no planned decoding step ({whyNoStep})" : "");

        var fullyPlanned = run is not null && run.Plan.Fallbacks.Count == 0 && (io is null || step is not null);
        var plan = string.Join("\n", (run?.Plan.Lines() ?? [$"run: not planned ({whyNotPlanned})"]).Concat(step?.Plan.Lines() ?? (io is not null && run is not null ? [$"step: not planned ({whyNoStep})"] : [])));
        return new EmittedModel(_options.ClassName, WriteClass(inputs, body, run is not null, step is not null ? (io!, stepBody!) : null), _weights, _nodes.Count, activations, fullyPlanned)
        {
            Plan = plan + "\n",
            GenericCalls = _genericCalls,
        };
    }

    /// <summary>
    /// What a failing node becomes: a kernel's deliberate check (<c>KernelException</c>) is bad input (KILN0023), a
    /// tensor over the call's memory budget is KILN0022; anything else thrown by Kiln's code is a bug in Kiln, kept as
    /// the inner exception (KILN0099). Input checks and disposal pass through as they are.
    /// </summary>
    private static void EmitFailureHandler(CodeWriter w)
    {
        w.Open("catch (KernelException e)");
        w.Line("throw new ModelRunException(\"KILN0023\", ModelName, at >= 0 ? NodeNames[at] : null, at >= 0 ? NodeOps[at] : null, e.Message);");
        w.Close();
        w.Open("catch (MemoryBudgetException e)");
        w.Line("throw new ModelRunException(\"KILN0022\", ModelName, at >= 0 ? NodeNames[at] : null, at >= 0 ? NodeOps[at] : null, e.Message);");
        w.Close();
        w.Open("catch (Exception e) when (e is not (ModelRunException or ObjectDisposedException or KilnInternalException))");
        w.Line("throw new KilnInternalException(ModelName, at >= 0 ? NodeNames[at] : null, at >= 0 ? NodeOps[at] : null, e);");
        w.Close();
    }

    private string Fresh(string stem)
    {
        var name = stem;
        for (var k = 2; !_used.Add(name); k++) name = stem + "_" + k;
        return name;
    }

    internal string NameOf(Value v) => _names.TryGetValue(v, out var n) ? n
        : throw new KilnException(new Diagnostic(DiagnosticCode.CodeGenFailed, $"value {v} is used before the emitter defined it", _options.SourceName));

    internal string Declare(Value v)
    {
        var name = Fresh("v" + _locals++);
        _names[v] = name;
        return name;
    }

    internal string Static(string type, string prefix, string initializer)
    {
        if (_staticByInit.TryGetValue(type + " " + initializer, out var existing)) return existing;
        var name = Fresh(prefix);
        _statics.Add((type, name, initializer));
        _staticByInit[type + " " + initializer] = name;
        return name;
    }

    private void DeclareConstant(Value c) => _names[c] = WeightField(c.Name, c.Data!);

    /// <summary>The field (or static) holding a constant: strings inline, everything else from the blob.</summary>
    private string WeightField(string name, TensorData data)
    {
        var shape = CSharp.Ints(data.Dims.Select(d => checked((int)d)));
        if (data is StringTensorData s) return Static("Tensor", "Text", $"Tensor.FromStrings({shape}, {CSharp.Strings(s.AsStrings)})");
        if (data.Elem is DType.I4 or DType.U4 or DType.C64 or DType.C128)
            throw new KilnException(new Diagnostic(DiagnosticCode.CodeGenFailed, $"constant '{name}' is {data.Elem.Name()}, which the runtime cannot hold", _options.SourceName));
        var blobName = name;
        for (var k = 2; _weights.Any(w => w.Name == blobName); k++) blobName = name + "#" + k;
        _weights.Add(new BlobTensor(blobName, data));
        var field = Fresh(WeightFieldName(name));
        _weightFields.Add((field, $"blob.Get({CSharp.String(blobName)}, DType.{data.Elem}, {shape})", $"{name}: {data.Type}"));
        return field;
    }

    /// <summary>
    /// A weight's field is named after its IR name (<c>_w_model_layers_0_attention_wq_weight</c>), its last 60 characters
    /// when longer; the <c>_w_</c> prefix keeps it apart from the class's own fields (<c>_arena</c>, <c>_blob</c>, …).
    /// </summary>
    private static string WeightFieldName(string name)
    {
        var words = System.Text.RegularExpressions.Regex.Replace(CSharp.Identifier(name).TrimStart('@'), "_+", "_").Trim('_');
        if (words.Length > 60) words = words[^60..].TrimStart('_');
        return "_w_" + words;
    }


    /// <summary>Input checks; returns the parameter list of the typed Run (name, C# type, input index).</summary>
    private List<(string Param, string Type, string OnnxName)> EmitInputs(CodeWriter body)
    {
        var read = _graph.AllGraphs().SelectMany(g => g.Nodes).SelectMany(n => n.Inputs).Concat(_graph.Outputs.Select(o => o.Value))
            .OfType<Value>().Where(v => v.Kind == ValueKind.GraphInput && v.Owner == _graph).ToHashSet();
        var symbols = _graph.Inputs.Select(v => v.TensorType?.Shape).Where(s => s is not null).SelectMany(s => s!.Dims)
            .Select(d => d.SymbolName).OfType<string>().Distinct().ToList();
        body.Line($"if (inputs.Count != {_graph.Inputs.Count}) throw new ModelRunException(\"KILN0021\", ModelName, null, null, $\"expected {_graph.Inputs.Count} inputs, got {{inputs.Count}}\");");
        if (symbols.Count > 0) body.Line($"var bound = new long[] {{ {string.Join(", ", symbols.Select(_ => "-1L"))} }};");
        var symbolNames = symbols.Count > 0 ? Static("string[]", "Symbols", CSharp.Strings(symbols)) : "System.Array.Empty<string>()";
        var parameters = new List<(string, string, string)>();
        for (var i = 0; i < _graph.Inputs.Count; i++)
        {
            var v = _graph.Inputs[i];
            var local = Fresh("in" + i);
            _names[v] = local;
            var given = $"inputs[{i}]";
            if (v.Data is not null) given = $"({given} ?? {WeightField(v.Name, v.Data)})";
            string type;
            switch (v.Type)
            {
                case TensorType tt:
                    type = "Tensor";
                    var shape = read.Contains(v) ? tt.Shape : null;
                    var dims = shape is null ? "null" : CSharp.Ints(shape.Dims.Select(d => d.Value is { } x ? checked((int)x) : -1));
                    var syms = shape is null || shape.Dims.All(d => d.SymbolName is null) ? "null"
                        : "new string?[] { " + string.Join(", ", shape.Dims.Select(d => d.SymbolName is { } s ? CSharp.String(s) : "null")) + " }";
                    body.Line($"var {local} = Generated.Input(ModelName, {CSharp.String(v.Name)}, {given}, DType.{tt.Elem}, {dims}, {syms}, {(symbols.Count > 0 ? "bound" : "System.Array.Empty<long>()")}, {symbolNames});");
                    break;
                case SequenceType:
                    type = "TensorSequence";
                    body.Line($"var {local} = Generated.Value(ModelName, {CSharp.String(v.Name)}, {given}, \"seq\");");
                    break;
                case OptionalType:
                    type = "OptionalValue?";
                    body.Line($"var {local} = Generated.Value(ModelName, {CSharp.String(v.Name)}, {given} ?? new OptionalValue(null), \"optional\");");
                    break;
                default:
                    throw new KilnException(new Diagnostic(DiagnosticCode.CodeGenFailed, $"input '{v.Name}' has type {v.Type}, which code generation cannot take", _options.SourceName));
            }
            parameters.Add((CSharp.Identifier(v.Name), v.Data is not null && type == "Tensor" ? "Tensor?" : type, v.Name));
        }
        // Symbols every tensor input binds (a dim of a read input, so its value was checked and recorded).
        var boundByReadInputs = _graph.Inputs.Where(read.Contains).Select(v => v.TensorType?.Shape).Where(sh => sh is not null)
            .SelectMany(sh => sh!.Dims).Select(d => d.SymbolName).OfType<string>().ToHashSet(StringComparer.Ordinal);
        for (var i = 0; i < symbols.Count; i++)
        {
            if (!boundByReadInputs.Contains(symbols[i])) continue;
            var local = Fresh("dim_" + CSharp.Identifier(symbols[i]).TrimStart('@'));
            _symbolLocals[symbols[i]] = local;
            body.Line($"var {local} = bound[{i}];");
        }
        return parameters;
    }

    private void EmitGraphBody(Graph g, CodeWriter body)
    {
        // In the main graph, intermediates go back to the model's tensor pool after their last use (subgraph bodies
        // keep theirs: they run a variable number of times).
        var outputs = g.Outputs.Select(o => o.Value).ToHashSet();
        var (skipped, needed) = g == _graph ? Plan(g, outputs) : ([], g.Nodes.ToHashSet());
        var last = g == _graph ? LastUses(g, needed) : null;
        var live = new List<Value>(g.Inputs);
        for (var i = 0; i < g.Nodes.Count; i++)
        {
            var node = g.Nodes[i];
            var id = _nodes.Count;
            _nodes.Add(node);
            var outs = string.Join(", ", node.Outputs.Select(o => o is null ? "_" : "%" + o.Name));
            if (!needed.Contains(node))
            {
                foreach (var o in node.Outputs)
                    if (o is not null && skipped.Contains(o) && (outputs.Contains(o) || o.Uses.Any(u => needed.Contains(u.Node) || u.Node.Owner != g)))
                    {
                        body.Line($"// {CSharp.Comment(node.Name ?? "#" + node.Index)}: {node.QualifiedOp} → %{CSharp.Comment(o.Name)} = {CSharp.Comment(FormatKnown(_known[o]))}, from the input dims");
                        body.Line($"var {Declare(o)} = {KnownExpression(_known[o])};");
                        live.Add(o);
                    }
                continue;
            }
            body.Line($"// {CSharp.Comment(node.Name ?? "#" + node.Index)}: {node.QualifiedOp} → {CSharp.Comment(outs)}");
            body.Line($"at = {id};");
            _backend.EmitNode(new NodeEmitContext(this, node, body));
            _genericCalls++;
            if (last is null) continue;
            live.AddRange(node.Outputs.OfType<Value>());
            var dead = live.Where(v => v.Kind == ValueKind.NodeOutput && !outputs.Contains(v) && last.GetValueOrDefault(v, i) <= i).ToList();
            if (dead.Count == 0) continue;
            live.RemoveAll(dead.Contains);
            // A dead value's buffer may still back a live one (Reshape and friends return views): Release checks.
            body.Line($"Generated.Release(_pool, new object?[] {{ {string.Join(", ", dead.Select(NameOf))} }}, new object?[] {{ {string.Join(", ", live.Select(NameOf))} }});");
        }
    }

    /// <summary>
    /// Which values of the main graph are computed from the input dims (small i64 tensors whose elements inference
    /// expressed in bound symbols) and which nodes still have to run: those some graph output needs, not counting
    /// reads of a computed value.
    /// </summary>
    private (HashSet<Value> Computed, HashSet<Node> Needed) Plan(Graph g, HashSet<Value> outputs)
    {
        var computed = new HashSet<Value>();
        foreach (var n in g.Nodes)
            foreach (var o in n.Outputs)
                if (o is not null && _known.TryGetValue(o, out var k) && k.Elem == DType.I64 && k.Shape.Length <= 1
                    && o.TensorType?.Elem == DType.I64 && k.Values.All(d => !d.IsUnknown && d.Symbols.All(_symbolLocals.ContainsKey)))
                    computed.Add(o);
        var needed = new HashSet<Node>();
        var wanted = new HashSet<Value>(outputs.Where(v => !computed.Contains(v)));
        for (var i = g.Nodes.Count - 1; i >= 0; i--)
        {
            var n = g.Nodes[i];
            if (!n.Outputs.Any(o => o is not null && wanted.Contains(o))) continue;
            needed.Add(n);
            foreach (var v in n.Inputs) if (v is not null && !computed.Contains(v)) wanted.Add(v);
            foreach (var sub in n.Subgraphs)
                foreach (var inner in sub.AllGraphs())
                    foreach (var v in inner.Nodes.SelectMany(x => x.Inputs).OfType<Value>().Concat(inner.Outputs.Select(o => o.Value)))
                        if (v.Owner == g && !computed.Contains(v)) wanted.Add(v);
        }
        return (computed, needed);
    }

    private string KnownExpression(Kiln.Ir.Inference.SymbolicTensor k)
    {
        var values = k.Values.Select(d => d.ToExpression(s => _symbolLocals[s])!);
        return $"Tensor.FromArray(DType.I64, {CSharp.Ints(k.Shape.Select(d => (int)d))}, new long[] {{ {string.Join(", ", values)} }})";
    }

    private static string FormatKnown(Kiln.Ir.Inference.SymbolicTensor k) => "[" + string.Join(", ", k.Values.Select(d => d.ToString())) + "]";

    /// <summary>The index of the last needed node of <paramref name="g"/> that reads each value (a subgraph's reads count at the node holding it).</summary>
    private static Dictionary<Value, int> LastUses(Graph g, HashSet<Node> needed)
    {
        var index = new Dictionary<Node, int>();
        for (var i = 0; i < g.Nodes.Count; i++) index[g.Nodes[i]] = i;
        return Liveness.LastReads(g, g.Nodes.Where(needed.Contains).ToList(), n => index[n]);
    }

    internal string AttributesOf(Node node, CodeWriter body)
    {
        var parts = new List<string>();
        var hasGraphs = false;
        foreach (var (name, value) in node.Attributes)
        {
            if (value is GraphAttr g)
            {
                parts.Add($".Set({CSharp.String(name)}, {EmitSubgraph(name, g.Value, body)})");
                hasGraphs = true;
            }
            else if (AttributeValue(value) is { } text) parts.Add($".Set({CSharp.String(name)}, {text})");
        }
        if (OpRegistry.Default.Find(node.Domain, node.Op) is { } def)
            foreach (var d in def.Attributes)
                if (d.Default is { } dv && !node.Attributes.ContainsKey(d.Name) && AttributeValue(dv) is { } text)
                    parts.Add($".Default({CSharp.String(d.Name)}, {text})");
        var init = "new OpAttributes()" + string.Concat(parts);
        if (!hasGraphs) return Static("OpAttributes", "Attrs", init);
        var local = Fresh("attrs" + _locals++);
        body.Line($"var {local} = {init};");
        return local;
    }

    private string? AttributeValue(AttrValue a) => a switch
    {
        IntAttr i => CSharp.Long(i.Value),
        FloatAttr f => CSharp.Float(f.Value),
        StringAttr s => CSharp.String(s.Value),
        IntsAttr i => CSharp.Longs(i.Value),
        FloatsAttr f => CSharp.Floats(f.Value),
        StringsAttr s => CSharp.Strings(s.Value),
        TensorAttr t => TensorLiteral(t.Value),
        _ => null,
    };

    private string TensorLiteral(TensorData t)
    {
        var shape = CSharp.Ints(t.Dims.Select(d => checked((int)d)));
        if (t is StringTensorData s) return $"Tensor.FromStrings({shape}, {CSharp.Strings(s.AsStrings)})";
        return Static("Tensor", "Literal", $"Generated.Constant(DType.{t.Elem}, {shape}, {CSharp.String(Convert.ToBase64String(t.Bytes))})");
    }

    /// <summary>A subgraph as a local <c>Subgraph</c> whose lambda computes its outputs from its inputs and the enclosing locals.</summary>
    private string EmitSubgraph(string attr, Graph g, CodeWriter body)
    {
        var local = Fresh("graph" + _locals++);
        var args = Fresh("args" + _locals++);
        body.Line($"var {local} = new Subgraph({CSharp.String(g.Name)}, {args} =>");
        body.Line("{");
        body.Indent++;
        for (var i = 0; i < g.Inputs.Count; i++)
        {
            var v = g.Inputs[i];
            var name = Fresh("v" + _locals++);
            _names[v] = name;
            var fallback = v.Data is not null ? WeightField(v.Name, v.Data) : "null";
            body.Line($"var {name} = {i} < {args}.Count ? {args}[{i}] : {fallback};");
        }
        EmitGraphBody(g, body);
        body.Line("return new object?[] { " + string.Join(", ", g.Outputs.Select(o => NameOf(o.Value))) + " };");
        body.Indent--;
        var types = "new DType?[] { " + string.Join(", ", g.Outputs.Select(o => o.Value.Type is TensorType tt ? "DType." + tt.Elem : "null")) + " }";
        var shapes = "new int[]?[] { " + string.Join(", ", g.Outputs.Select(o => o.Value.Type is TensorType { Shape: { } s } ? CSharp.Ints(s.Dims.Select(d => (int)(d.Value ?? 0))) : "null")) + " }";
        body.Line($"}}, {types}, {shapes});");
        return local;
    }
}
