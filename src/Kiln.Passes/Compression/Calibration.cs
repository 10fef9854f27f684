using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Analysis;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime;

namespace Kiln.Passes;

/// <summary>
/// Calibration inputs: the graph inputs of one batch per sample (<c>input_N.pb</c> sets of a folder, or the rows of a
/// token file as <c>input_ids</c>). Inputs a sample does not give are filled where the graph allows it: a KV-cache
/// model's past keys and values start empty (every symbolic dim but the batch is 0).
/// </summary>
public sealed record CalibrationSet(string Source, IReadOnlyList<IReadOnlyDictionary<string, TensorData>> Samples)
{
    /// <summary>Tokens per sample row for a token file (the rows are split into samples of this many rows).</summary>
    public const int RowsPerSample = 8;

    /// <summary>One sample's feeds for <paramref name="g"/>, missing past inputs as empty tensors.</summary>
    public Dictionary<Value, object?> Feeds(Graph g, int sample)
    {
        var given = Samples[sample];
        var feeds = new Dictionary<Value, object?>();
        long batch = given.Values.Select(t => t.Dims.Length > 0 ? t.Dims[0] : 1).DefaultIfEmpty(1).First();
        foreach (var input in g.Inputs)
        {
            if (given.TryGetValue(input.Name, out var data)) { feeds[input] = data.ToTensor(); continue; }
            if (input.Data is { } init) { feeds[input] = init.ToTensor(); continue; }
            if (input.TensorType is not { Shape: { } shape } tt || !shape.Dims.Any(d => d.Value is null))
                throw new KilnException(new Diagnostic(DiagnosticCode.CalibrationData,
                    $"calibration data {Source} gives no '{input.Name}', and the model has no empty form of it (only past inputs with a symbolic length can start empty)"));
            var dims = shape.Dims.Select((d, i) => d.Value is { } v ? (int)v : i == 0 ? (int)batch : 0).ToArray();
            feeds[input] = Tensor.Zeros(tt.Elem.ToRuntime(), dims);
        }
        return feeds;
    }
}

/// <summary>
/// Runs the graph on the calibration samples node by node, in graph (topological) order, and hands each chosen layer
/// its input activations just before it runs. The handler may rewrite the layer (quantize it); the walk then runs
/// the rewritten node, so later layers see the activations the compressed earlier layers produce — as GPTQ's
/// sequential procedure wants. Values are freed after their last reader, so memory stays at what one forward pass
/// of the samples keeps live, whatever the model's depth.
/// </summary>
public static class CalibrationWalk
{
    /// <summary>One layer's inputs: the activations [tokens, columns] of every sample, concatenated (<see cref="SampleTokens"/> of each, in order).</summary>
    public sealed record LayerInputs(float[] X, int Tokens, int Columns)
    {
        public IReadOnlyList<int> SampleTokens { get; init; } = [Tokens];
    }

    /// <param name="handle">gets a layer and its inputs; returns the nodes that now compute it, in order (the layer itself when unchanged)</param>
    public static void Run(PassContext ctx, CalibrationSet data, IReadOnlySet<Node> layers, Func<Node, LayerInputs, IReadOnlyList<Node>> handle) =>
        Run(ctx, data, layers, (node, x, _) => handle(node, x));

    /// <param name="handle">as above, and the walk's values (the layer's other inputs can be read from them)</param>
    public static void Run(PassContext ctx, CalibrationSet data, IReadOnlySet<Node> layers, Func<Node, LayerInputs, SampleValues, IReadOnlyList<Node>> handle)
    {
        var values = new SampleValues(ctx.Graph, data);
        var order = values.Order;
        var done = 0;
        for (var i = 0; i < order.Count; i++)
        {
            IReadOnlyList<Node> run = [order[i]];
            if (layers.Contains(order[i]))
            {
                var node = order[i];
                done++;
                ctx.Report($"calibrating layer {done}/{layers.Count} ({node.Name ?? node.QualifiedOp})");
                run = handle(node, values.InputsOf(node), values);
                // Readers of the old output now read the new one: it lives as long as the old one would have.
                if (run[^1] != node && node.Outputs[0] is { } old && run[^1].Outputs[0] is { } fresh && values.LastUse.TryGetValue(old, out var l)) values.LastUse[fresh] = l;
                foreach (var r in run.Take(run.Count - 1))
                    foreach (var o in r.Outputs) if (o is not null) values.LastUse[o] = i;
            }
            foreach (var node in run) values.Run(node);
            values.Release(run, i);
        }
    }
}

/// <summary>
/// A graph's values on every calibration sample, computed one node at a time (all samples advance together, so a
/// layer sees every sample's activations at once) and each freed after its last reader (by position in
/// <see cref="Order"/>). <see cref="CalibrationWalk"/> walks the graph being compressed with it; <c>reconstruct</c>
/// walks its teacher alongside.
/// </summary>
public sealed class SampleValues
{
    private readonly Graph _graph;
    private readonly CalibrationSet _data;
    private readonly List<Dictionary<Value, object?>> _states;
    private readonly HashSet<Value> _outputs;

    public SampleValues(Graph g, CalibrationSet data)
    {
        if (g.Nodes.Any(n => n.Subgraphs.Any()))
            throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedOp, "calibration walks graphs without control flow (If, Loop, Scan); this graph has some"));
        _graph = g;
        _data = data;
        _states = Enumerable.Range(0, data.Samples.Count).Select(i => data.Feeds(g, i)).ToList();
        Order = g.Nodes.ToList();
        LastUse = Liveness.LastReads(g, Order);
        _outputs = g.Outputs.Select(o => o.Value).ToHashSet();
    }

    /// <summary>The graph's nodes in the order they run (as the graph held them when the walk began).</summary>
    public List<Node> Order { get; }

    /// <summary>Each value's last reader, by position in <see cref="Order"/>; a walk that inserts nodes extends it.</summary>
    public Dictionary<Value, int> LastUse { get; }

    /// <summary>The node's input <paramref name="index"/> (its first by default) on every sample, concatenated as [tokens, columns].</summary>
    public CalibrationWalk.LayerInputs InputsOf(Node node, int index = 0)
    {
        var parts = _states.Select(s => (Tensor)Read(s, node.Inputs[index]!)!).ToList();
        var columns = parts[0].Shape[^1];
        var tokens = (int)parts.Sum(p => p.Length / columns);
        var x = new float[(long)tokens * columns];
        var at = 0;
        foreach (var p in parts) { p.Span<float>().CopyTo(x.AsSpan(at)); at += (int)p.Length; }
        return new CalibrationWalk.LayerInputs(x, tokens, columns) { SampleTokens = parts.Select(p => (int)(p.Length / columns)).ToList() };
    }

    private int _next;

    /// <summary>
    /// Runs, in order, every node before <paramref name="node"/> not run yet, freeing as it goes: a walk that only
    /// reads (reconstruct's teacher) follows another this way. Nodes already passed cannot be revisited.
    /// </summary>
    public void RunUpTo(Node node)
    {
        var at = Order.IndexOf(node);
        if (at < _next) throw new InvalidOperationException($"calibration: {node} was passed already (at {at}, now at {_next})");
        for (; _next < at; _next++)
        {
            Run(Order[_next]);
            Release([Order[_next]], _next);
        }
    }

    /// <summary>Runs the node on every sample.</summary>
    public void Run(Node node)
    {
        foreach (var s in _states)
        {
            object?[] outs;
            try
            {
                outs = Interpreter.EvaluateNode(node, node.Inputs.Select(v => v is null ? null : Read(s, v)).ToList());
            }
            catch (KernelException e)
            {
                // A kernel refusing the data (a token id past a table) is the calibration data's fault, not Kiln's.
                throw new KilnException(new Diagnostic(DiagnosticCode.RuntimeError, $"calibration data {_data.Source}: {e.Message}", null, node.Name, _graph.Nodes.IndexOf(node), node.QualifiedOp));
            }
            for (var k = 0; k < node.Outputs.Length; k++)
                if (node.Outputs[k] is { } o) s[o] = outs[k];
        }
    }

    /// <summary>Frees the values the nodes just run at <paramref name="position"/> read for the last time (graph outputs stay).</summary>
    public void Release(IEnumerable<Node> ran, int position)
    {
        foreach (var s in _states)
            foreach (var v in ran.SelectMany(n => n.Inputs).Distinct())
                if (v is not null && LastUse.TryGetValue(v, out var last) && last == position && !_outputs.Contains(v)) s.Remove(v);
    }

    private static object? Read(Dictionary<Value, object?> state, Value v) =>
        v.Kind == ValueKind.Constant ? v.Data!.ToTensor(persistent: true) : state.TryGetValue(v, out var x) ? x : throw new InvalidOperationException($"calibration: {v} was not computed");
}
