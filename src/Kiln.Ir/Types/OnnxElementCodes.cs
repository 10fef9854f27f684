namespace Kiln.Ir;

/// <summary>ONNX TensorProto.DataType codes for Kiln's element types; the IR needs them for Cast's 'to' attribute.</summary>
public static class OnnxElementCodes
{
    public static DType? FromCode(int code) => code switch
    {
        1 => DType.F32, 2 => DType.U8, 3 => DType.I8, 4 => DType.U16, 5 => DType.I16,
        6 => DType.I32, 7 => DType.I64, 8 => DType.String, 9 => DType.Bool, 10 => DType.F16,
        11 => DType.F64, 12 => DType.U32, 13 => DType.U64, 14 => DType.C64, 15 => DType.C128,
        16 => DType.BF16, 21 => DType.U4, 22 => DType.I4,
        _ => null,
    };

    public static int ToCode(DType t) => t switch
    {
        DType.F32 => 1, DType.U8 => 2, DType.I8 => 3, DType.U16 => 4, DType.I16 => 5,
        DType.I32 => 6, DType.I64 => 7, DType.String => 8, DType.Bool => 9, DType.F16 => 10,
        DType.F64 => 11, DType.U32 => 12, DType.U64 => 13, DType.C64 => 14, DType.C128 => 15,
        DType.BF16 => 16, DType.U4 => 21, DType.I4 => 22,
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
