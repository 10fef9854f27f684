using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the activation family (Ir/Ops/ActivationOps): Relu, Sigmoid, Tanh.</summary>
internal static class ActivationKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Sigmoid"] = ElementwiseKernels.Unary("System.Numerics.Tensors.TensorPrimitives.Sigmoid<float>");
        d["Tanh"] = ElementwiseKernels.Unary("System.Numerics.Tensors.TensorPrimitives.Tanh<float>");
        d["Relu"] = new(
            c => c.In(0)!.Elem == DType.F32 ? null : "f32 only",
            c => c.Body.Line($"System.Numerics.Tensors.TensorPrimitives.Max<float>({c.In(0)!.Span}, 0f, {c.Out(0)!.Span});"));
    }
}
