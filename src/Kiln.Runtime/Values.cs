namespace Kiln.Runtime;

/// <summary>A sequence value at run time (ONNX seq(tensor)).</summary>
public sealed record TensorSequence(IReadOnlyList<Tensor> Items, DType? ElementType);

/// <summary>An optional value at run time; <paramref name="Value"/> null is the empty optional.</summary>
public sealed record OptionalValue(object? Value);

/// <summary>Values an operator passes around: tensors, sequences, optionals.</summary>
public static class Values
{
    public static string Describe(object? v) => v switch
    {
        Tensor t => t.ToString(),
        TensorSequence s => $"seq of {s.Items.Count}",
        OptionalValue o => o.Value is null ? "empty optional" : $"optional({Describe(o.Value)})",
        null => "nothing",
        _ => v.GetType().Name,
    };
}
