using Kiln.Ir.Diagnostics;

namespace Kiln.Ir.Ops;

/// <summary>What an opset adapter sees of a node being imported: its op, inputs and attributes, which it may rewrite.</summary>
public sealed class AdapterContext(Graph graph, int opset, string op, List<Value?> inputs, Dictionary<string, AttrValue> attributes, string? nodeName)
{
    /// <summary>The version of the op's domain the model imports.</summary>
    public int Opset { get; } = opset;

    /// <summary>The op; an adapter may rename it (Upsample becomes Resize).</summary>
    public string Op { get; set; } = op;

    public List<Value?> Inputs { get; } = inputs;

    public Dictionary<string, AttrValue> Attributes { get; } = attributes;

    public string? NodeName { get; } = nodeName;

    public Graph Graph { get; } = graph;

    /// <summary>Adds a constant to the graph under a fresh name built from the node's name and <paramref name="hint"/>.</summary>
    public Value Constant(TensorData data, string hint)
    {
        var stem = (string.IsNullOrEmpty(NodeName) ? Op : NodeName) + "." + hint;
        var name = stem;
        for (var i = 1; Graph.Lookup(name) is not null; i++) name = $"{stem}.{i}";
        return Graph.AddConstant(name, data);
    }

    public Value Int64Constant(long[] values, string hint, bool scalar = false) =>
        Constant(TensorData.Int64(scalar ? [] : [values.Length], values), hint);

    public Value FloatConstant(float[] values, string hint, bool scalar = false) =>
        Constant(TensorData.FromArray(DType.F32, scalar ? [] : [values.Length], values), hint);

    /// <summary>Removes an attribute and returns it.</summary>
    public T? Take<T>(string name) where T : AttrValue
    {
        if (!Attributes.Remove(name, out var v)) return null;
        return v as T ?? throw Fail($"attribute '{name}' has kind {v.Kind}, expected {typeof(T).Name.Replace("Attr", "")}");
    }

    public Value? Input(int index) => index < Inputs.Count ? Inputs[index] : null;

    /// <summary>Sets input <paramref name="index"/>, padding with absent inputs.</summary>
    public void SetInput(int index, Value? value)
    {
        while (Inputs.Count <= index) Inputs.Add(null);
        Inputs[index] = value;
    }

    /// <summary>ONNX output names of the node being adapted.</summary>
    public IReadOnlyList<string?> OutputNames { get; init; } = [];

    /// <summary>Set by an adapter that emitted the node's whole replacement itself (through <see cref="Emit"/>).</summary>
    public bool Handled { get; set; }

    /// <summary>Appends a helper node (canonical form) to the graph; returns its outputs. Null names make fresh ones.</summary>
    public Value[] Emit(string op, Value?[] inputs, Dictionary<string, AttrValue>? attributes = null, int outputs = 1, IReadOnlyList<string?>? names = null)
    {
        var outNames = new string?[outputs];
        for (var i = 0; i < outputs; i++)
        {
            if (names is not null && names[i] is { } given) { outNames[i] = given; continue; }
            var stem = (string.IsNullOrEmpty(NodeName) ? Op : NodeName) + "." + op.ToLowerInvariant();
            var name = stem;
            for (var k = 1; Graph.Lookup(name) is not null || outNames.Contains(name); k++) name = $"{stem}.{k}";
            outNames[i] = name;
        }
        var node = Graph.AddNode(op, "", string.IsNullOrEmpty(NodeName) ? null : NodeName + "." + op, inputs, outNames, attributes);
        return node.Outputs.Select(o => o!).ToArray();
    }

    public KilnException Fail(string message) =>
        new(new Diagnostic(DiagnosticCode.BadAttribute, message, NodeName: NodeName, Op: Op));
}
