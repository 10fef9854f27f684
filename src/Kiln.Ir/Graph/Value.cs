namespace Kiln.Ir;

public enum ValueKind { GraphInput, NodeOutput, Constant }

/// <summary>An SSA value: defined once (graph input, constant or node output), used by any number of nodes.</summary>
public sealed class Value
{
    private readonly List<Use> _uses = [];

    internal Value(string name, IrType type, ValueKind kind)
    {
        Name = name;
        Type = type;
        Kind = kind;
    }

    public string Name { get; set; }

    public IrType Type { get; set; }

    public ValueKind Kind { get; internal set; }

    /// <summary>The node that defines this value, for node outputs.</summary>
    public Node? Producer { get; internal set; }

    /// <summary>Constant contents, or the default of a graph input that ONNX also lists as an initializer.</summary>
    public TensorData? Data { get; set; }

    /// <summary>The graph this value is defined in.</summary>
    public Graph Owner { get; internal set; } = null!;

    public IReadOnlyList<Use> Uses => _uses;

    public TensorType? TensorType => Type as TensorType;

    internal void AddUse(Node node, int index) => _uses.Add(new Use(node, index));

    internal void RemoveUse(Node node, int index) => _uses.Remove(new Use(node, index));

    public override string ToString() => (Kind == ValueKind.Constant ? "@" : "%") + Name;
}

/// <summary>A use of a value: input <paramref name="Index"/> of <paramref name="Node"/>.</summary>
public readonly record struct Use(Node Node, int Index);
