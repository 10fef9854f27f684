namespace Kiln.Ir;

/// <summary>Element types of tensors. i4/u4 are packed two per byte (low nibble first), as in ONNX.</summary>
public enum ElementType
{
    F32, F16, BF16, F64, I64, I32, I16, I8, U8, U16, U32, U64, Bool, String, I4, U4, C64, C128,
}

public static class ElementTypes
{
    private static readonly string[] Names =
        ["f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "u16", "u32", "u64", "bool", "string", "i4", "u4", "c64", "c128"];

    public static string Name(this ElementType t) => Names[(int)t];

    public static bool TryParse(string name, out ElementType type)
    {
        var i = Array.IndexOf(Names, name);
        type = i >= 0 ? (ElementType)i : default;
        return i >= 0;
    }

    /// <summary>Bits per element; 0 for strings (variable length).</summary>
    public static int Bits(this ElementType t) => t switch
    {
        ElementType.F32 or ElementType.I32 or ElementType.U32 => 32,
        ElementType.F16 or ElementType.BF16 or ElementType.I16 or ElementType.U16 => 16,
        ElementType.F64 or ElementType.I64 or ElementType.U64 or ElementType.C64 => 64,
        ElementType.C128 => 128,
        ElementType.I8 or ElementType.U8 or ElementType.Bool => 8,
        ElementType.I4 or ElementType.U4 => 4,
        ElementType.String => 0,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Bytes needed for <paramref name="count"/> elements (packed types round up).</summary>
    public static long ByteCount(this ElementType t, long count) => (count * t.Bits() + 7) / 8;

    public static bool IsFloat(this ElementType t) =>
        t is ElementType.F32 or ElementType.F16 or ElementType.BF16 or ElementType.F64;

    public static bool IsInteger(this ElementType t) =>
        t is ElementType.I64 or ElementType.I32 or ElementType.I16 or ElementType.I8 or ElementType.U8
            or ElementType.U16 or ElementType.U32 or ElementType.U64 or ElementType.I4 or ElementType.U4;
}
