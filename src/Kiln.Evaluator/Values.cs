using Kiln.Ir;
using Kiln.Runtime;

namespace Kiln.Evaluator;

/// <summary>A sequence value at run time (ONNX seq(tensor)).</summary>
public sealed record TensorSequence(IReadOnlyList<Tensor> Items, DType? ElementType);

/// <summary>An optional value at run time; <paramref name="Value"/> null is the empty optional.</summary>
public sealed record OptionalValue(object? Value);

/// <summary>Conversions between Kiln.Ir's element types and constants and the runtime's.</summary>
public static class RuntimeTypes
{
    /// <summary>The enums share their order (checked by a test), so this is a cast.</summary>
    public static DType ToRuntime(this ElementType t) => (DType)(int)t;

    public static ElementType ToIr(this DType t) => (ElementType)(int)t;

    /// <summary>A tensor over the constant's bytes (no copy; mapped weights stay mapped).</summary>
    public static Tensor ToTensor(this TensorData data, bool persistent = false)
    {
        var shape = data.Dims.Select(d => checked((int)d)).ToArray();
        if (data is StringTensorData s) return Tensor.FromStrings(shape, s.AsStrings.ToArray());
        if (data.Elem is ElementType.I4 or ElementType.U4 or ElementType.C64 or ElementType.C128)
            throw new KernelException($"{data.Elem.Name()} tensors are not supported by the evaluator");
        return Tensor.Wrap(data.Elem.ToRuntime(), shape, System.Runtime.InteropServices.MemoryMarshal.AsMemory(data.Memory), persistent);
    }

    /// <summary>A copy of the tensor as IR tensor data (for writing files and comparing).</summary>
    public static TensorData ToTensorData(this Tensor t)
    {
        var dims = t.Shape.Select(d => (long)d).ToArray();
        if (t.Type == DType.String) return new StringTensorData(dims, t.Strings.Select(x => System.Text.Encoding.UTF8.GetBytes(x)).ToArray());
        return new MemoryTensorData(t.Type.ToIr(), dims, t.Bytes.ToArray());
    }

    public static string Describe(object? v) => v switch
    {
        Tensor t => t.ToString(),
        TensorSequence s => $"seq of {s.Items.Count}",
        OptionalValue o => o.Value is null ? "empty optional" : $"optional({Describe(o.Value)})",
        null => "nothing",
        _ => v.GetType().Name,
    };
}
