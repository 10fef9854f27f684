using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>
/// Planned CPU kernels of the activation family (Ir/Ops/ActivationOps): Relu, Sigmoid, Tanh, LeakyRelu, HardSigmoid,
/// HardSwish, Clip, GELU (ONNX's and Kiln's fused one).
/// </summary>
internal static class ActivationKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Sigmoid"] = ElementwiseKernels.Unary("System.Numerics.Tensors.TensorPrimitives.Sigmoid<float>");
        d["Tanh"] = ElementwiseKernels.Unary("System.Numerics.Tensors.TensorPrimitives.Tanh<float>");
        d["Relu"] = new(
            c => c.In(0)!.Elem == DType.F32 ? null : "f32 only",
            c => c.Body.Line($"System.Numerics.Tensors.TensorPrimitives.Max<float>({c.In(0)!.Span}, 0f, {c.Out(0)!.Span});"));
        d["LeakyRelu"] = InPlace(c => $"\"LeakyRelu\", alpha: {CSharp.Float(c.Node.AttrFloat("alpha"))}");
        d["HardSigmoid"] = InPlace(c => $"\"HardSigmoid\", alpha: {CSharp.Float(c.Node.AttrFloat("alpha"))}, beta: {CSharp.Float(c.Node.AttrFloat("beta"))}");
        d["HardSwish"] = InPlace(_ => "\"HardSwish\"");
        d["Clip"] = new(
            c => c.In(0)!.Elem == DType.F32 && Bound(c, 1) is not null && Bound(c, 2) is not null ? null : "f32 with one-element f32 bounds",
            c =>
            {
                c.Body.Line($"{c.In(0)!.Span}.CopyTo({c.Out(0)!.Span});");
                c.Body.Line($"Kernels.Fused.Activate({c.Out(0)!.Span}, \"Clip\", min: {Bound(c, 1)}, max: {Bound(c, 2)});");
            });
        d["Gelu"] = new(
            c => c.In(0)!.Elem == DType.F32 && c.Node.AttrString("approximate") is "none" or "tanh" ? null : "f32",
            c => c.Body.Line($"Kernels.Fused.Gelu({c.In(0)!.Span}, {c.Out(0)!.Span}, tanh: {(c.Node.AttrString("approximate") == "tanh" ? "true" : "false")});"));
        d[Kiln.Runtime.Operators.KilnOp.Qualified.Gelu] = new(
            c => c.In(0)!.Elem == DType.F32 ? null : "f32",
            c => c.Body.Line($"Kernels.Fused.Gelu({c.In(0)!.Span}, {c.Out(0)!.Span}, tanh: {(c.Node.AttrString("approximate") == "tanh" ? "true" : "false")});"));
    }

    /// <summary>An f32 activation the runtime applies in place (<c>Fused.Activate</c>, one vector loop): the input copied to the output first.</summary>
    private static PlannedKernel InPlace(Func<PlannedNodeContext, string> arguments) => new(
        c => c.In(0)!.Elem == DType.F32 ? null : "f32 only",
        c =>
        {
            c.Body.Line($"{c.In(0)!.Span}.CopyTo({c.Out(0)!.Span});");
            c.Body.Line($"Kernels.Fused.Activate({c.Out(0)!.Span}, {arguments(c)});");
        });

    /// <summary>Clip's bound i (1: min, 2: max) as a float expression: the one-element input, the attribute (opset &lt; 11), or none; null when neither fits.</summary>
    private static string? Bound(PlannedNodeContext c, int i)
    {
        if (c.In(i) is { } b) return b.Elem == DType.F32 && b.Dims.All(v => v == "1") ? $"{b.Span}[0]" : null;
        if (c.Node.Attr<FloatAttr>(i == 1 ? "min" : "max") is { } a) return CSharp.Float(a.Value);
        return i == 1 ? "float.MinValue" : "float.MaxValue";
    }
}
