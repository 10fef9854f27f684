namespace Kiln.Runtime.Operators;

/// <summary>
/// The names of Kiln's own ops (domain <c>kiln</c>), written once: the registry declares them with these, passes
/// create them, the runtime's operator table and the code generator find them by them.
/// </summary>
public static class KilnOp
{
    public const string Domain = "kiln";

    public const string RmsNorm = "RMSNorm";
    public const string SiLU = "SiLU";
    public const string Gelu = "GELU";
    public const string RotaryEmbedding = "RotaryEmbedding";
    public const string GroupQueryAttention = "GroupQueryAttention";
    public const string MatMulAdd = "MatMulAdd";
    public const string ConvActivation = "ConvActivation";
    public const string QuantizedMatMul = "QuantizedMatMul";
    public const string QuantizedGather = "QuantizedGather";
    public const string SparseMatMul = "SparseMatMul";

    /// <summary>The same ops as <c>kiln:Op</c>: operator-table keys and <c>Node.QualifiedOp</c>.</summary>
    public static class Qualified
    {
        public const string RmsNorm = Domain + ":" + KilnOp.RmsNorm;
        public const string SiLU = Domain + ":" + KilnOp.SiLU;
        public const string Gelu = Domain + ":" + KilnOp.Gelu;
        public const string RotaryEmbedding = Domain + ":" + KilnOp.RotaryEmbedding;
        public const string GroupQueryAttention = Domain + ":" + KilnOp.GroupQueryAttention;
        public const string MatMulAdd = Domain + ":" + KilnOp.MatMulAdd;
        public const string ConvActivation = Domain + ":" + KilnOp.ConvActivation;
        public const string QuantizedMatMul = Domain + ":" + KilnOp.QuantizedMatMul;
        public const string QuantizedGather = Domain + ":" + KilnOp.QuantizedGather;
        public const string SparseMatMul = Domain + ":" + KilnOp.SparseMatMul;
    }
}
