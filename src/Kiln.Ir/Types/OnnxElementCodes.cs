namespace Kiln.Ir;

/// <summary>ONNX TensorProto.DataType codes for Kiln's element types; the IR needs them for Cast's 'to' attribute.</summary>
public static class OnnxElementCodes
{
    public static ElementType? FromCode(int code) => code switch
    {
        1 => ElementType.F32, 2 => ElementType.U8, 3 => ElementType.I8, 4 => ElementType.U16, 5 => ElementType.I16,
        6 => ElementType.I32, 7 => ElementType.I64, 8 => ElementType.String, 9 => ElementType.Bool, 10 => ElementType.F16,
        11 => ElementType.F64, 12 => ElementType.U32, 13 => ElementType.U64, 14 => ElementType.C64, 15 => ElementType.C128,
        16 => ElementType.BF16, 21 => ElementType.U4, 22 => ElementType.I4,
        _ => null,
    };

    public static int ToCode(ElementType t) => t switch
    {
        ElementType.F32 => 1, ElementType.U8 => 2, ElementType.I8 => 3, ElementType.U16 => 4, ElementType.I16 => 5,
        ElementType.I32 => 6, ElementType.I64 => 7, ElementType.String => 8, ElementType.Bool => 9, ElementType.F16 => 10,
        ElementType.F64 => 11, ElementType.U32 => 12, ElementType.U64 => 13, ElementType.C64 => 14, ElementType.C128 => 15,
        ElementType.BF16 => 16, ElementType.U4 => 21, ElementType.I4 => 22,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Name ONNX uses for a type code, for messages.</summary>
    public static string CodeName(int code) => code switch
    {
        17 => "FLOAT8E4M3FN", 18 => "FLOAT8E4M3FNUZ", 19 => "FLOAT8E5M2", 20 => "FLOAT8E5M2FNUZ", 23 => "FLOAT4E2M1",
        0 => "UNDEFINED",
        _ => FromCode(code)?.Name() ?? $"code {code}",
    };
}
