using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the elementwise family (Ir/Ops/ElementwiseOps): unary math, the four binary ops, Pow, the comparisons, Where, Cast.</summary>
internal static class ElementwiseKernels
{
    private static readonly Dictionary<string, string> BinaryOps = new(StringComparer.Ordinal)
    {
        ["Add"] = "AddOp", ["Sub"] = "SubOp", ["Mul"] = "MulOp", ["Div"] = "DivOp",
    };

    public static bool Numeric(DType e) => e is DType.F32 or DType.F64 or DType.I64 or DType.I32;

    /// <summary>An f32 unary op written as one call of a span method (<c>method(x, y)</c>).</summary>
    public static PlannedKernel Unary(string method) => new(
        c => c.In(0)!.Elem == DType.F32 && c.Out(0)!.Elem == DType.F32 ? null : "f32 only",
        c => c.Body.Line($"{method}({c.In(0)!.Span}, {c.Out(0)!.Span});"));

    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Cos"] = Unary("System.Numerics.Tensors.TensorPrimitives.Cos<float>");
        d["Sin"] = Unary("System.Numerics.Tensors.TensorPrimitives.Sin<float>");
        d["Exp"] = Unary("System.Numerics.Tensors.TensorPrimitives.Exp<float>");
        d["Neg"] = Unary("System.Numerics.Tensors.TensorPrimitives.Negate<float>");
        d["Sqrt"] = Unary("System.Numerics.Tensors.TensorPrimitives.Sqrt<float>");
        foreach (var (op, kernel) in BinaryOps)
            d[op] = new(
                c => Numeric(c.Out(0)!.Elem) && c.In(1)!.Elem == c.Out(0)!.Elem && c.In(0)!.Elem == c.Out(0)!.Elem && c.Out(0)!.Rank <= 8 ? null : "numeric operands of one type",
                c =>
                {
                    var (x, b, y) = (c.In(0)!, c.In(1)!, c.Out(0)!);
                    c.Body.Line($"Kernels.ArenaKernels.Binary<{y.ClrType}, Kernels.{kernel}<{y.ClrType}>>({x.Span}, {x.Shape}, {b.Span}, {b.Shape}, {y.Span}, {y.Shape});");
                });
        foreach (var op in new[] { "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual" })
            d[op] = new(
                c => Numeric(c.In(0)!.Elem) && c.In(1)!.Elem == c.In(0)!.Elem && c.Out(0)!.Rank <= 8 ? null : "numeric operands of one type",
                c =>
                {
                    var (x, b, y) = (c.In(0)!, c.In(1)!, c.Out(0)!);
                    c.Body.Line($"Kernels.ArenaKernels.Compare<{x.ClrType}>({x.Span}, {x.Shape}, {b.Span}, {b.Shape}, {y.Span}, {y.Shape}, Kernels.Comparison.{op});");
                });
        d["Erf"] = Unary("Kernels.ArenaKernels.Erf");
        d["Pow"] = new(
            c => c.In(0)!.Elem == DType.F32 && c.In(1) is { Elem: DType.F32 } e && e.Dims.All(v => v == "1") ? null : "f32 to a one-element f32 power",
            c => c.Body.Line($"System.Numerics.Tensors.TensorPrimitives.Pow<float>({c.In(0)!.Span}, {c.In(1)!.Span}[0], {c.Out(0)!.Span});"));
        d["Where"] = new(
            c => c.In(0)!.Elem == DType.Bool && c.In(1)!.Elem == c.Out(0)!.Elem && c.In(2)!.Elem == c.Out(0)!.Elem && c.Out(0)!.ClrType != "" && c.Out(0)!.Rank <= 8 ? null : "bool condition",
            c =>
            {
                var (x, a, b, y) = (c.In(0)!, c.In(1)!, c.In(2)!, c.Out(0)!);
                c.Body.Line($"Kernels.ArenaKernels.Where<{y.ClrType}>({x.Span}, {x.Shape}, {a.Span}, {a.Shape}, {b.Span}, {b.Shape}, {y.Span}, {y.Shape});");
            });
        d["Cast"] = new(
            c => c.In(0)!.ClrType != "" && c.Out(0)!.ClrType != "" && c.Out(0)!.Elem != DType.Bool && c.In(0)!.Elem != DType.Bool ? null : "numeric types",
            c => c.Body.Line($"Kernels.ArenaKernels.Cast<{c.In(0)!.ClrType}, {c.Out(0)!.ClrType}>({c.In(0)!.Span}, {c.Out(0)!.Span});"));
    }
}
