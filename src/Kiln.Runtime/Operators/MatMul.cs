using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the MatMul family: products (MatMul, Gemm, MatMulInteger, QLinearMatMul, Einsum, Det). The ops are declared in Kiln.Ir/Ops/MatMulOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterMatMul(Dictionary<string, Action<OpContext>> d)
    {
        d["MatMul"] = c => c.Set(0, MatMulAny(c.In(0), c.In(1)));
        d["Gemm"] = c => c.Set(0, GemmKernel.Run(c.In(0), c.In(1), c.Opt(2), c.Float("alpha"), c.Float("beta"), c.Int("transA") != 0, c.Int("transB") != 0));
        d["MatMulInteger"] = c =>
        {
            var a = Centered(c.In(0), c.Opt(2), ZeroPointAxis.RowsOfA);
            var b = Centered(c.In(1), c.Opt(3), ZeroPointAxis.ColumnsOfB);
            c.Set(0, Cast.To(MatMul.Multiply(a, b), DType.I32));
        };
        d["QLinearMatMul"] = c =>
        {
            var a = Quantize.Dequantize(c.In(0), c.In(1), c.In(2), 1, 0);
            var b = Quantize.Dequantize(c.In(3), c.In(4), c.In(5), 1, 0);
            var y = MatMul.Multiply(Cast.To(a, DType.F32), Cast.To(b, DType.F32));
            c.Set(0, Quantize.Linear(y, c.In(6), c.In(7), 1, 0, c.In(7).Type));
        };
        d["Det"] = c => c.Set(0, Special.Det(c.In(0)));
        d["Einsum"] = c => c.Set(0, Einsum.Run(c.Str("equation"), Enumerable.Range(0, c.InputCount).Select(c.In).ToList()));
    }

    private static Tensor MatMulAny(Tensor a, Tensor b) => MatMul.Multiply(a, b);
}
