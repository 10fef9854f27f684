namespace Kiln.Runtime.Operators;

/// <summary>
/// A subgraph held in an attribute (If branches, Loop/Scan/SequenceMap bodies): how the op calls it and what its
/// outputs are declared as (an empty Loop still returns [0, …] tensors of the declared type).
/// </summary>
public sealed record Subgraph(string Name, Func<IReadOnlyList<object?>, object?[]> Run, IReadOnlyList<DType?> OutputTypes, IReadOnlyList<int[]?> OutputShapes)
{
    public int OutputCount => OutputTypes.Count;
}

/// <summary>
/// An op's attributes with the op's defaults already filled in, built once per node: by the evaluator from the IR,
/// by generated code from literals. Values are long, float, string, long[], float[], string[], Tensor or Subgraph;
/// element-type attributes (Cast's <c>to</c>) are ONNX TensorProto.DataType codes, as in the ONNX file.
/// </summary>
public sealed class OpAttributes
{
    private readonly Dictionary<string, object> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _given = new(StringComparer.Ordinal);

    /// <summary>An attribute the node gives.</summary>
    public OpAttributes Set(string name, object value)
    {
        _values[name] = value;
        _given.Add(name);
        return this;
    }

    /// <summary>An attribute the node leaves to the op's default.</summary>
    public OpAttributes Default(string name, object value)
    {
        _values.TryAdd(name, value);
        return this;
    }

    /// <summary>Whether the node gives the attribute (defaults do not count: some ops behave differently when one is absent).</summary>
    public bool Has(string name) => _given.Contains(name);

    public object? Find(string name) => _values.GetValueOrDefault(name);
}

/// <summary>What an operator sees for one call: its input values, attributes, which outputs are wanted, and its outputs.</summary>
public sealed class OpContext
{
    public OpContext(OpAttributes attributes, object?[] inputs, int outputCount, bool[]? wanted = null)
    {
        Attributes = attributes;
        Inputs = inputs;
        Outputs = new object?[outputCount];
        _wanted = wanted;
    }

    private readonly bool[]? _wanted;

    public OpAttributes Attributes { get; }

    public object?[] Inputs { get; }

    public object?[] Outputs { get; }

    public int InputCount => Inputs.Length;

    public int OutputCount => Outputs.Length;

    public bool HasInput(int i) => i < Inputs.Length && Inputs[i] is not null;

    /// <summary>Whether output i is wanted (present in the graph).</summary>
    public bool WantsOutput(int i) => i < Outputs.Length && (_wanted is null || _wanted[i]);

    public Tensor In(int i) => i < Inputs.Length && Inputs[i] is Tensor t ? t
        : throw new KernelException(i < Inputs.Length && Inputs[i] is { } v ? $"input {i} is a {Values.Describe(v)}, not a tensor" : $"input {i} is missing");

    public Tensor? Opt(int i) => i < Inputs.Length ? Inputs[i] as Tensor : null;

    public object? Value(int i) => i < Inputs.Length ? Inputs[i] : null;

    public void Set(int i, object? v) => Outputs[i] = v;

    public bool Has(string name) => Attributes.Has(name);

    // Scalar attributes come given or with the op's registry default (both engines pass the defaults with the
    // attributes), so an entry never writes a default of its own. Reading one that has neither is a bug in the entry:
    // an optional attribute without a default is read behind Has(name).

    public long Int(string name) => Attributes.Find(name) is long i ? i : throw Missing(name, "an int");

    public float Float(string name) => Attributes.Find(name) switch
    {
        float f => f,
        long i => i,
        _ => throw Missing(name, "a float"),
    };

    public string Str(string name) => Attributes.Find(name) as string ?? throw Missing(name, "a string");

    private static InvalidOperationException Missing(string name, string kind) =>
        new($"attribute '{name}' ({kind}) was read but is neither given nor defaulted by the op's definition");

    public long[]? Ints(string name) => Attributes.Find(name) as long[];

    public float[]? Floats(string name) => Attributes.Find(name) as float[];

    public string[]? Strings(string name) => Attributes.Find(name) as string[];

    public Tensor? TensorAttr(string name) => Attributes.Find(name) as Tensor;

    /// <summary>An element type attribute (an ONNX TensorProto.DataType code, as Cast's 'to').</summary>
    public DType ElemAttr(string name, DType fallback)
    {
        if (Attributes.Find(name) is not long code) return fallback;
        return DTypes.FromOnnxCode((int)code)
            ?? throw new KernelException($"attribute '{name}' names ONNX element type {code}, which the runtime does not support");
    }

    public Subgraph Graph(string name) => Attributes.Find(name) as Subgraph ?? throw new KernelException($"attribute '{name}' (a graph) is missing");

    /// <summary>Runs a subgraph with the given inputs (by position); returns its outputs.</summary>
    public object?[] RunSubgraph(Subgraph g, IReadOnlyList<object?> inputs) => g.Run(inputs);
}
