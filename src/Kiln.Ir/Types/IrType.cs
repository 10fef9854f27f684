namespace Kiln.Ir;

/// <summary>A shape: a list of dims. Null shapes (unknown rank) live on <see cref="TensorType"/>.</summary>
public sealed class Shape : IEquatable<Shape>
{
    private readonly Dim[] _dims;

    public Shape(IEnumerable<Dim> dims) => _dims = dims.ToArray();

    public static Shape Of(params long[] dims) => new(dims.Select(Dim.Const));

    public static readonly Shape Scalar = new([]);

    public int Rank => _dims.Length;

    public Dim this[int i] => _dims[i];

    public IReadOnlyList<Dim> Dims => _dims;

    public bool IsFullyKnown => _dims.All(d => d.IsConstant);

    /// <summary>Concrete dims, or null when any dim is not a known number.</summary>
    public long[]? ToConcrete() => IsFullyKnown ? _dims.Select(d => d.Value!.Value).ToArray() : null;

    /// <summary>Number of elements as a dim (product of dims).</summary>
    public Dim ElementCount() => _dims.Aggregate(Dim.One, (a, b) => a * b);

    public bool Equals(Shape? other) => other is not null && _dims.SequenceEqual(other._dims);

    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    public override int GetHashCode() => _dims.Aggregate(17, (h, d) => h * 31 + d.GetHashCode());

    public override string ToString() => "[" + string.Join(", ", _dims.Select(d => d.ToString())) + "]";
}

/// <summary>The type of a value: a tensor, a sequence, an optional, or not known.</summary>
public abstract record IrType
{
    public static readonly IrType Unknown = new UnknownType();
}

/// <summary>A tensor of <paramref name="Elem"/>; <paramref name="Shape"/> null means the rank is not known.</summary>
public sealed record TensorType(DType Elem, Shape? Shape) : IrType
{
    public override string ToString() => Elem.Name() + (Shape is null ? "[*]" : Shape.ToString());

    public int? Rank => Shape?.Rank;
}

/// <summary>ONNX's seq(T).</summary>
public sealed record SequenceType(IrType Element) : IrType
{
    public override string ToString() => $"seq({Element})";
}

/// <summary>ONNX's optional(T).</summary>
public sealed record OptionalType(IrType Element) : IrType
{
    public override string ToString() => $"optional({Element})";
}

/// <summary>A value whose type is not known (printed <c>?</c>).</summary>
public sealed record UnknownType : IrType
{
    public override string ToString() => "?";
}
