using Kiln.Ir.Diagnostics;
using Kiln.Ir.Ops;

namespace Kiln.Ir.Inference;

/// <summary>Thrown by a shape rule when an input's type is not known, so outputs stay unknown.</summary>
internal sealed class UnknownInputTypeException : Exception;

/// <summary>What a shape rule sees: the node, its input types and known values, attributes with defaults.</summary>
public sealed class InferenceContext
{
    private readonly ShapeInference _engine;

    internal InferenceContext(ShapeInference engine, Node node, OpDef def)
    {
        _engine = engine;
        Node = node;
        Def = def;
    }

    public Node Node { get; }

    public OpDef Def { get; }

    public int InputCount => Node.Inputs.Count;

    public int OutputCount => Node.Outputs.Length;

    public bool HasInput(int i) => i < Node.Inputs.Count && Node.Inputs[i] is not null;

    public bool HasOutput(int i) => i < Node.Outputs.Length && Node.Outputs[i] is not null;

    public IrType InputType(int i) => HasInput(i) ? Node.Inputs[i]!.Type : throw Fail($"input {i} is required");

    /// <summary>The tensor type of input i; throws (leaving outputs unknown) when it is not known.</summary>
    public TensorType Tensor(int i) => InputType(i) as TensorType ?? throw new UnknownInputTypeException();

    public DType Elem(int i) => Tensor(i).Elem;

    /// <summary>Shape of input i, or null when its rank is not known.</summary>
    public Shape? ShapeOf(int i) => Tensor(i).Shape;

    /// <summary>Shape of input i; throws (leaving outputs unknown but typed by the caller) when its rank is not known.</summary>
    public Shape RankedShape(int i) => ShapeOf(i) ?? throw new UnknownInputTypeException();

    /// <summary>The input's value when known (constants and shape arithmetic).</summary>
    public SymbolicTensor? Known(int i) => HasInput(i) ? _engine.KnownValue(Node.Inputs[i]!) : null;

    /// <summary>The input's value as numbers when fully known.</summary>
    public long[]? KnownInts(int i) => Known(i)?.Concrete;

    /// <summary>Constant data of input i when it is a constant.</summary>
    public TensorData? ConstantData(int i) => HasInput(i) && Node.Inputs[i]!.Kind == ValueKind.Constant ? Node.Inputs[i]!.Data : null;

    public AttrValue? Attr(string name) =>
        Node.Attributes.TryGetValue(name, out var v) ? v : Def.FindAttribute(name)?.Default;

    public bool HasAttr(string name) => Node.Attributes.ContainsKey(name);

    public long Int(string name) => Attr(name) switch
    {
        IntAttr i => i.Value,
        null => throw Fail($"attribute '{name}' is required"),
        var a => throw Fail($"attribute '{name}' must be an int, not {a.Kind}"),
    };

    public long? OptInt(string name) => Attr(name) is IntAttr i ? i.Value : null;

    public float Float(string name) => Attr(name) switch
    {
        FloatAttr f => f.Value,
        null => throw Fail($"attribute '{name}' is required"),
        var a => throw Fail($"attribute '{name}' must be a float, not {a.Kind}"),
    };

    public string Str(string name) => Attr(name) switch
    {
        StringAttr s => s.Value,
        null => throw Fail($"attribute '{name}' is required"),
        var a => throw Fail($"attribute '{name}' must be a string, not {a.Kind}"),
    };

    public long[]? Ints(string name) => Attr(name) switch
    {
        IntsAttr i => i.Value,
        null => null,
        var a => throw Fail($"attribute '{name}' must be ints, not {a.Kind}"),
    };

    public Graph GraphAttr(string name) => Attr(name) is GraphAttr g ? g.Value : throw Fail($"attribute '{name}' (graph) is required");

    public void Set(int i, IrType type)
    {
        if (HasOutput(i)) _engine.SetType(Node.Outputs[i]!, type);
    }

    public void Set(int i, DType elem, Shape? shape) => Set(i, new TensorType(elem, shape));

    public void Set(int i, DType elem, IEnumerable<Dim> dims) => Set(i, new TensorType(elem, new Shape(dims)));

    public void SetKnown(int i, SymbolicTensor value)
    {
        if (HasOutput(i) && value.Values.Length <= SymbolicTensor.MaxElements) _engine.SetKnown(Node.Outputs[i]!, value);
    }

    /// <summary>Infers a subgraph's types given its input types; returns its output types.</summary>
    public IReadOnlyList<IrType> InferSubgraph(Graph g, IReadOnlyList<IrType?> inputTypes) => _engine.InferSubgraph(g, inputTypes);

    /// <summary>Normalizes a possibly negative axis against a rank, failing when out of range.</summary>
    public int Axis(long axis, int rank)
    {
        var a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw Fail($"axis {axis} is out of range for rank {rank}");
        return (int)a;
    }

    public KilnException Fail(string message) =>
        new(new Diagnostic(DiagnosticCode.ShapeMismatch, message, NodeName: Node.Name, NodeIndex: Node.Owner.Nodes.IndexOf(Node), Op: Node.QualifiedOp));
}
