namespace Kiln.Runtime;

/// <summary>
/// Element types: the one enum of Kiln, for IR values and runtime tensors alike (the IR's types name it too).
/// A runtime tensor holds every kind but the packed 4-bit ones, which only weights in the IR use. bf16 is stored as
/// its raw 16 bits (ushort): .NET has no BFloat16 type.
/// </summary>
public enum DType
{
    F32, F16, BF16, F64, I64, I32, I16, I8, U8, U16, U32, U64, Bool, String, I4, U4, C64, C128,
}

public static class DTypes
{
    /// <summary>Bytes per element of a runtime tensor (every kind but strings and the packed 4-bit ones).</summary>
    public static int Size(this DType t) => t is DType.String or DType.I4 or DType.U4
        ? throw new KernelException($"{t.Name()} tensors are not supported by the runtime")
        : t.Bits() / 8;

    /// <summary>The name IR text and messages use: f32, bf16, i64, bool, string, …</summary>
    public static string Name(this DType t) => t.ToString().ToLowerInvariant();

    /// <summary>The element type a name from <see cref="Name"/> stands for.</summary>
    public static bool TryParse(string name, out DType type)
    {
        foreach (var t in Enum.GetValues<DType>())
            if (t.Name() == name) { type = t; return true; }
        type = default;
        return false;
    }

    /// <summary>Bits per element; 0 for strings (variable length). i4/u4 are packed two per byte (low nibble first), as in ONNX.</summary>
    public static int Bits(this DType t) => t switch
    {
        DType.F32 or DType.I32 or DType.U32 => 32,
        DType.F16 or DType.BF16 or DType.I16 or DType.U16 => 16,
        DType.F64 or DType.I64 or DType.U64 or DType.C64 => 64,
        DType.C128 => 128,
        DType.I8 or DType.U8 or DType.Bool => 8,
        DType.I4 or DType.U4 => 4,
        DType.String => 0,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Bytes needed for <paramref name="count"/> elements (packed types round up).</summary>
    public static long ByteCount(this DType t, long count) => (count * t.Bits() + 7) / 8;

    public static bool IsFloat(this DType t) => t is DType.F32 or DType.F64 or DType.F16 or DType.BF16;

    public static bool IsSignedInt(this DType t) => t is DType.I64 or DType.I32 or DType.I16 or DType.I8;

    public static bool IsUnsignedInt(this DType t) => t is DType.U64 or DType.U32 or DType.U16 or DType.U8;

    public static bool IsInteger(this DType t) => t.IsSignedInt() || t.IsUnsignedInt() || t is DType.I4 or DType.U4;

    /// <summary>The element type an ONNX TensorProto.DataType code names, or null for one the runtime lacks (f8 kinds).</summary>
    public static DType? FromOnnxCode(int code) => code switch
    {
        1 => DType.F32, 2 => DType.U8, 3 => DType.I8, 4 => DType.U16, 5 => DType.I16, 6 => DType.I32, 7 => DType.I64,
        8 => DType.String, 9 => DType.Bool, 10 => DType.F16, 11 => DType.F64, 12 => DType.U32, 13 => DType.U64,
        14 => DType.C64, 15 => DType.C128, 16 => DType.BF16, 21 => DType.U4, 22 => DType.I4,
        _ => null,
    };
}

/// <summary>A kernel cannot run on what it was given (bad shapes, unsupported element type, bad attribute value).</summary>
public sealed class KernelException(string message) : Exception(message);
