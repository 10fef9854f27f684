namespace Kiln.Ir.Inference;

/// <summary>
/// A small integer or boolean tensor whose elements are known as dims (numbers or symbolic expressions).
/// Shape inference tracks these through Shape → Gather → Concat → Reshape chains so dynamic reshape targets resolve.
/// Booleans are 0/1.
/// </summary>
public sealed record SymbolicTensor(DType Elem, long[] Shape, Dim[] Values)
{
    /// <summary>Largest tensor tracked; shape arithmetic never needs more.</summary>
    public const int MaxElements = 64;

    public long[]? Concrete => Values.All(v => v.IsConstant) ? Values.Select(v => v.Value!.Value).ToArray() : null;

    public bool IsScalar => Shape.Length == 0;

    public static SymbolicTensor Vector(DType elem, IReadOnlyList<Dim> values) => new(elem, [values.Count], values.ToArray());

    public static SymbolicTensor Scalar(DType elem, Dim value) => new(elem, [], [value]);
}
