using Kiln.Ir;
using Kiln.Ir.Ops;
using Kiln.Runtime;

namespace Kiln.Evaluator;

/// <summary>What an op's evaluator entry sees: the node, its input values, its attributes (with the op's defaults) and a way to run subgraphs.</summary>
public sealed class OpContext
{
    internal OpContext(Node node, object?[] inputs, Interpreter? interpreter, Scope? scope)
    {
        Node = node;
        Inputs = inputs;
        Interpreter = interpreter;
        Scope = scope;
        Outputs = new object?[node.Outputs.Length];
        Def = OpRegistry.Default.Find(node.Domain, node.Op);
    }

    public Node Node { get; }

    public object?[] Inputs { get; }

    public object?[] Outputs { get; }

    internal Interpreter? Interpreter { get; }

    internal Scope? Scope { get; }

    private OpDef? Def { get; }

    public int InputCount => Inputs.Length;

    public int OutputCount => Outputs.Length;

    public bool HasInput(int i) => i < Inputs.Length && Inputs[i] is not null;

    /// <summary>Whether output i is wanted (present in the graph).</summary>
    public bool WantsOutput(int i) => i < Node.Outputs.Length && Node.Outputs[i] is not null;

    public Tensor In(int i) => i < Inputs.Length && Inputs[i] is Tensor t ? t
        : throw new KernelException(i < Inputs.Length && Inputs[i] is { } v ? $"input {i} is a {RuntimeTypes.Describe(v)}, not a tensor" : $"input {i} is missing");

    public Tensor? Opt(int i) => i < Inputs.Length ? Inputs[i] as Tensor : null;

    public object? Value(int i) => i < Inputs.Length ? Inputs[i] : null;

    public void Set(int i, object? v) => Outputs[i] = v;

    private AttrValue? Attr(string name) =>
        Node.Attributes.TryGetValue(name, out var a) ? a : Def?.FindAttribute(name)?.Default;

    public bool Has(string name) => Node.Attributes.ContainsKey(name);

    public long Int(string name, long fallback = 0) => Attr(name) is IntAttr i ? i.Value : fallback;

    public float Float(string name, float fallback = 0) => Attr(name) switch
    {
        FloatAttr f => f.Value,
        IntAttr i => i.Value,
        _ => fallback,
    };

    public string Str(string name, string fallback = "") => Attr(name) is StringAttr s ? s.Value : fallback;

    public long[]? Ints(string name) => Attr(name) is IntsAttr i ? i.Value : null;

    public float[]? Floats(string name) => Attr(name) is FloatsAttr f ? f.Value : null;

    public string[]? Strings(string name) => Attr(name) is StringsAttr s ? s.Value : null;

    public TensorData? TensorAttr(string name) => Attr(name) is TensorAttr t ? t.Value : null;

    /// <summary>An element type attribute (an ONNX TensorProto.DataType code, as Cast's 'to').</summary>
    public DType ElemAttr(string name, DType fallback)
    {
        if (Attr(name) is not IntAttr code) return fallback;
        return OnnxElementCodes.FromCode((int)code.Value)?.ToRuntime()
            ?? throw new KernelException($"attribute '{name}' names element type {OnnxElementCodes.CodeName((int)code.Value)}, which the evaluator does not support");
    }

    public Graph Graph(string name) => Attr(name) is GraphAttr g ? g.Value : throw new KernelException($"attribute '{name}' (a graph) is missing");

    /// <summary>Runs a subgraph of this node with the given inputs (by position); returns its outputs.</summary>
    public object?[] RunSubgraph(Graph g, IReadOnlyList<object?> inputs) =>
        Interpreter is not null ? Interpreter.RunGraph(g, inputs, Scope) : throw new KernelException("this node runs outside an interpreter, so it cannot run subgraphs");
}
