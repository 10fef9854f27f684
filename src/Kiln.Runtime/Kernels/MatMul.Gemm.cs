using E = Kiln.Runtime.Kernels.Elementwise;

namespace Kiln.Runtime.Kernels;

/// <summary>ONNX Gemm on tensors: Y = alpha·op(A)·op(B) + beta·C, with C broadcast to Y.</summary>
public static class GemmKernel
{
    public static Tensor Run(Tensor a, Tensor b, Tensor? c, float alpha, float beta, bool transA, bool transB)
    {
        if (a.Type != DType.F32)
        {
            var at = transA ? Movement.Transpose(a, [1, 0]) : a;
            var bt = transB ? Movement.Transpose(b, [1, 0]) : b;
            var p = MatMul.Multiply(at, bt);
            if (alpha != 1) p = E.Numeric<E.MulOp>(p, Cast.To(Tensor.Scalar(alpha), p.Type));
            if (c is not null && beta != 0) p = E.Numeric<E.AddOp>(p, beta == 1 ? c : E.Numeric<E.MulOp>(c, Cast.To(Tensor.Scalar(beta), p.Type)));
            return p;
        }
        int m = transA ? a.Shape[1] : a.Shape[0], k = transA ? a.Shape[0] : a.Shape[1], n = transB ? b.Shape[0] : b.Shape[1];
        if ((transB ? b.Shape[1] : b.Shape[0]) != k)
            throw new KernelException($"Gemm inner dimensions differ: {a} (transA={(transA ? 1 : 0)}) × {b} (transB={(transB ? 1 : 0)})");
        var r = Tensor.Zeros(DType.F32, [m, n]);
        var accumulate = false;
        if (c is not null && beta != 0)
        {
            // C is scaled by beta/alpha so that the product, accumulated onto it and then scaled by alpha, gives beta·C.
            var bb = Movement.Expand(c, [m, n]);
            var src = bb.Span<float>();
            var dst = r.Span<float>();
            if (alpha == 0)
            {
                for (var i = 0; i < dst.Length; i++) dst[i] = beta * src[i];
                return r;
            }
            for (var i = 0; i < dst.Length; i++) dst[i] = beta * src[i] / alpha;
            accumulate = true;
        }
        MatMul.Gemm(a.Span<float>(), a.Shape[1], transA, b.Span<float>(), b.Shape[1], transB, r.Span<float>(), n, m, n, k, accumulate, b, 0);
        if (alpha != 1) System.Numerics.Tensors.TensorPrimitives.Multiply(r.Span<float>(), alpha, r.Span<float>());
        return r;
    }
}
