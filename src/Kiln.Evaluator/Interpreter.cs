using Kiln.Ir;
using Kiln.Ir.Analysis;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime;
using Kiln.Runtime.Operators;

namespace Kiln.Evaluator;

public sealed record EvaluatorOptions
{
    /// <summary>Bytes of tensors a run may hold at once; default half of the memory available to the process.</summary>
    public long MemoryBudget { get; init; } = Runtime.MemoryBudget.DefaultLimit;

    /// <summary>Threads kernels may use; 0 means every core.</summary>
    public int Threads { get; init; }

    /// <summary>
    /// Keep the GEMM-packed form of each weight used as a MatMul/Gemm right operand between runs: faster repeated
    /// runs (no repacking) at the cost of a second copy of those weights in memory.
    /// </summary>
    public bool CachePackedWeights { get; init; } = true;

    /// <summary>Collect time per op type in <see cref="Interpreter.Profile"/>.</summary>
    public bool Profile { get; init; }

    /// <summary>Wall-clock limit for one run (checked between nodes and loop iterations); null for none.</summary>
    public TimeSpan? TimeLimit { get; init; }
}

/// <summary>Values visible while a graph runs: its own, then those of the graphs enclosing it.</summary>
internal sealed class Scope(Scope? parent)
{
    private Scope? Parent { get; } = parent;

    public Dictionary<Value, object?> Values { get; } = [];

    public object? Lookup(Value v)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s.Values.TryGetValue(v, out var x)) return x;
        throw new KernelException($"value '{v.Name}' has not been computed");
    }
}

/// <summary>
/// Kiln's reference evaluator: runs an IR graph node by node, dispatching each to the Kiln.Runtime kernel for its
/// op. Inputs are checked against the graph's types first; intermediates are dropped after their last use; every
/// allocation counts against a memory budget, so a graph that asks for too much fails before allocating.
/// One run at a time: concurrent calls to <see cref="Run"/> on one interpreter are serialized.
/// </summary>
public sealed class Interpreter
{
    private readonly Graph _graph;
    private readonly EvaluatorOptions _options;

    /// <summary>Graph inputs some node (here or in a subgraph) or graph output reads.</summary>
    private readonly HashSet<Value> _readInputs;
    private readonly Dictionary<Graph, GraphPlan> _plans = [];
    private MemoryBudget? _budget;
    private DateTime _deadline = DateTime.MaxValue;
    private readonly TensorPool _pool = new();
    private HashSet<object> _live = new(ReferenceEqualityComparer.Instance);
    private HashSet<object> _protected = new(ReferenceEqualityComparer.Instance);

    public Interpreter(Graph graph, EvaluatorOptions? options = null, string? sourcePath = null)
    {
        _graph = graph;
        _readInputs = graph.AllGraphs().SelectMany(g => g.Nodes).SelectMany(n => n.Inputs).Concat(graph.Outputs.Select(o => o.Value))
            .OfType<Value>().Where(v => v.Kind == ValueKind.GraphInput && v.Owner == graph).ToHashSet();
        _options = options ?? new EvaluatorOptions();
        SourcePath = sourcePath;
        var missing = graph.AllGraphs().SelectMany(g => g.Nodes).Where(n => !Supports(n)).ToList();
        if (missing.Count > 0)
        {
            var groups = missing.GroupBy(n => n.QualifiedOp).Select(g =>
                $"{g.Key}: {g.Count()} node{(g.Count() == 1 ? "" : "s")} ({string.Join(", ", g.Take(3).Select(n => $"'{n.Name ?? "#" + n.Index}'"))}{(g.Count() > 3 ? ", …" : "")})");
            throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedOp,
                $"the evaluator has no kernel for {string.Join("; ", groups)}", sourcePath, missing[0].Name, missing[0].Index, missing[0].QualifiedOp));
        }
    }

    /// <summary>Whether the evaluator has a kernel for this node's op.</summary>
    public static bool Supports(Node node) => OperatorTable.Has(OperatorTable.Key(node.Domain, node.Op));

    /// <summary>
    /// Evaluates one node (one without subgraphs) on the given input values, outside any graph run; constant folding
    /// uses it so a folded node computes exactly what the evaluator would. Kernel failures throw <see cref="KernelException"/>.
    /// </summary>
    public static object?[] EvaluateNode(Node node, IReadOnlyList<object?> inputs)
    {
        if (!Supports(node)) throw new KernelException($"the evaluator has no kernel for {node.QualifiedOp}");
        var ctx = new OpContext(node.ToRuntime(null), inputs.ToArray(), node.Outputs.Length, node.Outputs.Select(o => o is not null).ToArray());
        OperatorTable.Get(OperatorTable.Key(node.Domain, node.Op))(ctx);
        return ctx.Outputs;
    }

    public string? SourcePath { get; }

    /// <summary>Time and node count per op type over all runs (when <see cref="EvaluatorOptions.Profile"/> is set).</summary>
    public Dictionary<string, (int Nodes, double Milliseconds)> Profile { get; } = [];

    /// <summary>Peak bytes held in tensors during the last run (inputs and constants excluded, temporaries included).</summary>
    public long PeakBytes { get; private set; }

    /// <summary>Runs the graph on named inputs; returns every graph output by name.</summary>
    public IReadOnlyDictionary<string, object?> Run(IReadOnlyDictionary<string, object?> inputs)
    {
        lock (_runLock) return RunLocked(inputs);
    }

    private readonly object _runLock = new();

    private IReadOnlyDictionary<string, object?> RunLocked(IReadOnlyDictionary<string, object?> inputs)
    {
        var ordered = CheckInputs(inputs);
        var saved = MemoryBudget.Current;
        var savedPool = TensorPool.Current;
        TensorPool.Current = _pool;
        // Buffers of inputs and constants belong to the caller and the model: never recycled.
        _protected = new HashSet<object>(ReferenceEqualityComparer.Instance);
        foreach (var x in ordered) foreach (var t in Tensors(x)) _protected.Add(t.Storage);
        _live = new HashSet<object>(ReferenceEqualityComparer.Instance);
        _budget = new MemoryBudget(_options.MemoryBudget);
        _deadline = _options.TimeLimit is { } limit ? DateTime.UtcNow + limit : DateTime.MaxValue;
        MemoryBudget.Current = _budget;
        var threads = Runtime.Kernels.Parallelism.UseUnlessSet(_options.Threads);
        try
        {
            var outs = RunGraph(_graph, ordered, null);
            var r = new Dictionary<string, object?>(StringComparer.Ordinal);
            for (var i = 0; i < outs.Length; i++) r[_graph.Outputs[i].Name] = outs[i];
            return r;
        }
        finally
        {
            PeakBytes = _budget.Peak;
            MemoryBudget.Current = saved;
            TensorPool.Current = savedPool;
            threads.Dispose();
        }
    }

    private object?[] CheckInputs(IReadOnlyDictionary<string, object?> inputs)
    {
        Diagnostic Bad(string message, Value? v = null) => new(DiagnosticCode.InputMismatch, message, SourcePath);
        foreach (var name in inputs.Keys)
            if (_graph.Inputs.All(v => v.Name != name))
                throw new KilnException(Bad($"input '{name}' is not an input of the graph (inputs: {string.Join(", ", _graph.Inputs.Select(v => v.Name))})"));
        var symbols = new Dictionary<string, long>(StringComparer.Ordinal);
        var result = new object?[_graph.Inputs.Count];
        for (var i = 0; i < _graph.Inputs.Count; i++)
        {
            var v = _graph.Inputs[i];
            if (!inputs.TryGetValue(v.Name, out var given) || given is null)
            {
                if (v.Data is not null) { result[i] = v.Data.ToTensor(); continue; }
                if (v.Type is OptionalType) { result[i] = new OptionalValue(null); continue; }
                throw new KilnException(Bad($"input '{v.Name}' ({v.Type}) is missing"));
            }
            // An input no node reads cannot affect the results: check its kind and element type, not its shape.
            CheckValue(v.Name, _readInputs.Contains(v) ? v.Type : v.Type is TensorType tt ? tt with { Shape = null } : v.Type, given, symbols);
            result[i] = given;
        }
        return result;
    }

    private void CheckValue(string name, IrType type, object value, Dictionary<string, long> symbols)
    {
        KilnException Bad(string message) => new(new Diagnostic(DiagnosticCode.InputMismatch, $"input '{name}': {message}", SourcePath));
        switch (type)
        {
            case TensorType tt:
                if (value is not Tensor t) throw Bad($"expected a tensor {tt}, got a {Values.Describe(value)}");
                if (t.Type != tt.Elem.ToRuntime()) throw Bad($"expected element type {tt.Elem.Name()}, got {t.Type.Name()}");
                if (tt.Shape is null) return;
                if (tt.Shape.Rank != t.Rank) throw Bad($"expected shape {tt.Shape} (rank {tt.Shape.Rank}), got [{string.Join(", ", t.Shape)}] (rank {t.Rank})");
                for (var d = 0; d < t.Rank; d++)
                {
                    var dim = tt.Shape[d];
                    if (dim.Value is { } c && c != t.Shape[d])
                        throw Bad($"expected shape {tt.Shape}, got [{string.Join(", ", t.Shape)}] (dim {d} must be {c})");
                    if (dim.SymbolName is { } s)
                    {
                        if (symbols.TryGetValue(s, out var bound) && bound != t.Shape[d])
                            throw Bad($"dim {d} is '{s}' = {t.Shape[d]}, but another input already set '{s}' = {bound}");
                        symbols[s] = t.Shape[d];
                    }
                }
                return;
            case SequenceType st:
                if (value is not TensorSequence seq) throw Bad($"expected a sequence, got a {Values.Describe(value)}");
                foreach (var item in seq.Items) CheckValue(name, st.Element is TensorType et ? et with { Shape = null } : st.Element, item, []);
                return;
            case OptionalType ot:
                if (value is not OptionalValue o) throw Bad($"expected an optional, got a {Values.Describe(value)}");
                if (o.Value is not null) CheckValue(name, ot.Element, o.Value, symbols);
                return;
        }
    }

    private sealed class GraphPlan
    {
        public required List<Value>[] FreeAfter { get; init; }
        public required Dictionary<Value, Tensor> Constants { get; init; }

        /// <summary>Each node's operator, attributes (null for nodes with subgraphs: those close over the run's scope) and wanted outputs.</summary>
        public required Action<OpContext>[] Operators { get; init; }

        public required OpAttributes?[] Attributes { get; init; }

        public required bool[][] Wanted { get; init; }
    }

    private GraphPlan Plan(Graph g)
    {
        if (_plans.TryGetValue(g, out var p)) return p;
        var last = Liveness.LastReads(g);
        foreach (var o in g.Outputs) last.Remove(o.Value);
        var free = Enumerable.Range(0, g.Nodes.Count).Select(_ => new List<Value>()).ToArray();
        foreach (var (v, i) in last)
            if (v.Owner == g && v.Kind == ValueKind.NodeOutput) free[i].Add(v);
        var constants = new Dictionary<Value, Tensor>();
        foreach (var c in g.Constants) constants[c] = c.Data!.ToTensor(persistent: _options.CachePackedWeights);
        p = new GraphPlan
        {
            FreeAfter = free,
            Constants = constants,
            Operators = g.Nodes.Select(n => OperatorTable.Get(OperatorTable.Key(n.Domain, n.Op))).ToArray(),
            Attributes = g.Nodes.Select(n => n.Subgraphs.Any() ? null : n.ToRuntime(null)).ToArray(),
            Wanted = g.Nodes.Select(n => n.Outputs.Select(o => o is not null).ToArray()).ToArray(),
        };
        _plans[g] = p;
        return p;
    }

    internal object?[] RunGraph(Graph g, IReadOnlyList<object?> inputs, Scope? parent)
    {
        var plan = Plan(g);
        var scope = new Scope(parent);
        for (var i = 0; i < g.Inputs.Count; i++)
            scope.Values[g.Inputs[i]] = i < inputs.Count ? inputs[i] : g.Inputs[i].Data?.ToTensor();
        foreach (var (v, t) in plan.Constants)
        {
            scope.Values[v] = t;
            _protected.Add(t.Storage);
        }
        // Tensor attributes (a Constant node's value) are returned as they are: their buffers belong to the model.
        foreach (var n in g.Nodes)
            foreach (var a in n.Attributes.Values)
                if (a is TensorAttr { Value: { } data } && data.Elem != DType.String) _protected.Add(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(data.Memory, out var seg) && seg.Array is not null ? seg.Array : data);
        for (var i = 0; i < g.Nodes.Count; i++)
        {
            var node = g.Nodes[i];
            if (DateTime.UtcNow > _deadline)
                throw NodeError(node, DiagnosticCode.RuntimeError, $"the run exceeded its time limit of {_options.TimeLimit!.Value.TotalSeconds:0.#} s");
            var args = new object?[node.Inputs.Count];
            for (var k = 0; k < args.Length; k++)
                if (node.Inputs[k] is { } v) args[k] = scope.Lookup(v);
            var ctx = new OpContext(plan.Attributes[i] ?? node.ToRuntime((sub, inputs) => RunGraph(sub, inputs, scope)), args, node.Outputs.Length, plan.Wanted[i]);
            var started = _options.Profile ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
            try
            {
                plan.Operators[i](ctx);
            }
            catch (KernelException e)
            {
                throw NodeError(node, DiagnosticCode.RuntimeError, e.Message);
            }
            catch (MemoryBudgetException e)
            {
                throw NodeError(node, DiagnosticCode.MemoryBudgetExceeded, e.Message);
            }
            catch (Exception e) when (e is not (KilnException or ObjectDisposedException))
            {
                // Not a check rejecting the input on purpose: a bug in Kiln, reported as one, with its cause kept.
                throw NodeError(node, DiagnosticCode.InternalError, $"this is a bug in Kiln: {e.GetType().Name}: {e.Message}", e);
            }
            if (_options.Profile)
            {
                var (count, ms) = Profile.GetValueOrDefault(node.QualifiedOp);
                Profile[node.QualifiedOp] = (count + 1, ms + System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
            for (var k = 0; k < node.Outputs.Length; k++)
                if (node.Outputs[k] is { } o) scope.Values[o] = ctx.Outputs[k];
            foreach (var dead in plan.FreeAfter[i]) scope.Values.Remove(dead);
            if (parent is null) Account(scope);
        }
        var outs = new object?[g.Outputs.Count];
        for (var i = 0; i < outs.Length; i++) outs[i] = scope.Lookup(g.Outputs[i].Value);
        return outs;
    }

    /// <summary>Sets the budget's in-use figure to what the scope still holds (temporaries are gone after a node).</summary>
    private void Account(Scope scope)
    {
        if (_budget is null) return;
        var seen = new HashSet<object>(ReferenceEqualityComparer.Instance);
        long bytes = 0;
        foreach (var (v, x) in scope.Values)
        {
            if (v.Kind != ValueKind.NodeOutput) continue;
            foreach (var t in Tensors(x))
                if (seen.Add(t.Storage)) bytes += t.ByteLength;
        }
        _budget.Release(_budget.InUse - bytes);
        // Buffers that were live after the previous node and are not now died with this node's last uses.
        foreach (var storage in _live)
            if (!seen.Contains(storage) && !_protected.Contains(storage) && storage is byte[] buffer) _pool.Return(buffer);
        _live = seen;
    }

    private static IEnumerable<Tensor> Tensors(object? x) => x switch
    {
        Tensor t => [t],
        TensorSequence s => s.Items,
        OptionalValue o => Tensors(o.Value),
        _ => [],
    };

    private KilnException NodeError(Node node, DiagnosticCode code, string message, Exception? cause = null)
    {
        var diagnostic = new Diagnostic(code, message, SourcePath, node.Name, node.Index, node.QualifiedOp);
        return cause is null ? new(diagnostic) : new(diagnostic, cause);
    }
}
