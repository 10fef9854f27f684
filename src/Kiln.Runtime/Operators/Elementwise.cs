using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Elementwise family: elementwise math, comparisons, logic, Cast, Clip, Where and the variadic Sum/Mean/Max/Min. The ops are declared in Kiln.Ir/Ops/ElementwiseOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterElementwise(Dictionary<string, Action<OpContext>> d)
    {
        void F<TOp>(string name) where TOp : IFloatUnary => d[name] = c => c.Set(0, E.Float<TOp>(c.In(0)));
        F<E.ExpOp>("Exp"); F<E.LogOp>("Log"); F<E.SqrtOp>("Sqrt"); F<E.TanhOp>("Tanh"); F<E.SigmoidOp>("Sigmoid");
        F<E.ReciprocalOp>("Reciprocal"); F<E.SinOp>("Sin"); F<E.CosOp>("Cos"); F<E.TanOp>("Tan"); F<E.AsinOp>("Asin");
        F<E.AcosOp>("Acos"); F<E.AtanOp>("Atan"); F<E.SinhOp>("Sinh"); F<E.CoshOp>("Cosh"); F<E.AsinhOp>("Asinh");
        F<E.AcoshOp>("Acosh"); F<E.AtanhOp>("Atanh"); F<E.ErfOp>("Erf"); F<E.RoundOp>("Round");
        d["Ceil"] = c => c.Set(0, c.In(0).Type.IsFloat() ? E.Float<E.CeilOp>(c.In(0)) : c.In(0));
        d["Floor"] = c => c.Set(0, c.In(0).Type.IsFloat() ? E.Float<E.FloorOp>(c.In(0)) : c.In(0));
        d["Abs"] = c => c.Set(0, E.NumericUnary<E.AbsOp>(c.In(0)));
        d["Neg"] = c => c.Set(0, E.NumericUnary<E.NegOp>(c.In(0)));
        d["Sign"] = c => c.Set(0, E.NumericUnary<E.SignOp>(c.In(0)));

        d["Add"] = c => c.Set(0, E.Numeric<E.AddOp>(c.In(0), c.In(1)));
        d["Sub"] = c => c.Set(0, E.Numeric<E.SubOp>(c.In(0), c.In(1)));
        d["Mul"] = c => c.Set(0, E.Numeric<E.MulOp>(c.In(0), c.In(1)));
        d["Div"] = c => c.Set(0, E.Numeric<E.DivOp>(c.In(0), c.In(1)));
        d["Mod"] = c => c.Set(0, c.Int("fmod") == 1 || c.In(0).Type.IsFloat() ? E.Numeric<E.FModOp>(c.In(0), c.In(1)) : E.Numeric<E.ModOp>(c.In(0), c.In(1)));
        d["Pow"] = c => c.Set(0, Activations.Pow(c.In(0), c.In(1)));
        d["Max"] = c => c.Set(0, Variadic(c, E.Numeric<E.MaxOp>));
        d["Min"] = c => c.Set(0, Variadic(c, E.Numeric<E.MinOp>));
        d["Sum"] = c => c.Set(0, Variadic(c, E.Numeric<E.AddOp>));
        d["Mean"] = c =>
        {
            var s = Variadic(c, E.Numeric<E.AddOp>);
            c.Set(0, E.Numeric<E.DivOp>(s, Cast.To(Tensor.Scalar((float)c.InputCount), s.Type)));
        };

        d["Equal"] = c => c.Set(0, c.In(0).Type == DType.String ? Logic.StringEqual(c.In(0), c.In(1)) : E.Compare<E.EqualOp>(c.In(0), c.In(1)));
        d["Less"] = c => c.Set(0, E.Compare<E.LessOp>(c.In(0), c.In(1)));
        d["LessOrEqual"] = c => c.Set(0, E.Compare<E.LessOrEqualOp>(c.In(0), c.In(1)));
        d["Greater"] = c => c.Set(0, E.Compare<E.GreaterOp>(c.In(0), c.In(1)));
        d["GreaterOrEqual"] = c => c.Set(0, E.Compare<E.GreaterOrEqualOp>(c.In(0), c.In(1)));
        d["And"] = c => c.Set(0, Logic.Bool(c.In(0), c.In(1), (a, b) => a && b));
        d["Or"] = c => c.Set(0, Logic.Bool(c.In(0), c.In(1), (a, b) => a || b));
        d["Xor"] = c => c.Set(0, Logic.Bool(c.In(0), c.In(1), (a, b) => a ^ b));
        d["Not"] = c => c.Set(0, E.Unary<byte, byte>(c.In(0), DType.Bool, v => (byte)(v == 0 ? 1 : 0)));
        d["BitwiseAnd"] = c => c.Set(0, Logic.Bitwise(c.In(0), c.In(1), (a, b) => a & b));
        d["BitwiseOr"] = c => c.Set(0, Logic.Bitwise(c.In(0), c.In(1), (a, b) => a | b));
        d["BitwiseXor"] = c => c.Set(0, Logic.Bitwise(c.In(0), c.In(1), (a, b) => a ^ b));
        d["BitwiseNot"] = c => c.Set(0, Logic.BitwiseNot(c.In(0)));
        d["BitShift"] = c =>
        {
            var left = c.Str("direction") == "LEFT";
            c.Set(0, Logic.Bitwise(c.In(0), c.In(1), (a, b) => b >= 64 ? 0 : left ? a << (int)b : (long)((ulong)a >> (int)b)));
        };
        d["IsNaN"] = c => c.Set(0, Activations.FloatPredicate(c.In(0), double.IsNaN));
        d["IsInf"] = c =>
        {
            bool neg = c.Int("detect_negative") != 0, pos = c.Int("detect_positive") != 0;
            c.Set(0, Activations.FloatPredicate(c.In(0), v => (neg && double.IsNegativeInfinity(v)) || (pos && double.IsPositiveInfinity(v))));
        };
        d["Where"] = c => c.Set(0, Movement.Where(c.In(0), c.In(1), c.In(2)));
        d["Clip"] = c => c.Set(0, Activations.Clip(c.In(0), c.Opt(1), c.Opt(2)));
        d["Cast"] = c => c.Set(0, Cast.To(c.In(0), c.ElemAttr("to", DType.F32)));
        d["CastLike"] = c => c.Set(0, Cast.To(c.In(0), c.In(1).Type));
        d["PRelu"] = c =>
        {
            var x = c.In(0);
            var neg = E.Numeric<E.MulOp>(x, c.In(1));
            var zero = Tensor.Zeros(x.Type, []);
            c.Set(0, Movement.Where(E.Compare<E.LessOp>(x, zero), neg, E.Numeric<E.AddOp>(x, Tensor.Zeros(x.Type, neg.Shape))));
        };
    }

    private static Tensor Variadic(OpContext c, Func<Tensor, Tensor, Tensor> f)
    {
        var r = c.In(0);
        for (var i = 1; i < c.InputCount; i++) r = f(r, c.In(i));
        return r;
    }
}

/// <summary>Small elementwise helpers the evaluator's entries share.</summary>
internal static class Activations
{
    /// <summary>A float function computed in double (conformance precision; hot activations have kernels of their own).</summary>
    public static Tensor Map(Tensor x, Func<double, double> f)
    {
        if (!x.Type.IsFloat()) throw E.Unsupported("this activation", x.Type);
        var r = Tensor.Uninitialized(x.Type, x.Shape);
        switch (x.Type)
        {
            case DType.F32:
                {
                    var s = x.Span<float>();
                    var o = r.Span<float>();
                    for (var i = 0; i < s.Length; i++) o[i] = (float)f(s[i]);
                    break;
                }
            case DType.F64:
                {
                    var s = x.Span<double>();
                    var o = r.Span<double>();
                    for (var i = 0; i < s.Length; i++) o[i] = f(s[i]);
                    break;
                }
            default:
                return Cast.To(Map(Cast.To(x, DType.F32), f), x.Type);
        }
        return r;
    }

    public static Tensor Relu(Tensor x)
    {
        if (x.Type == DType.F32)
        {
            var r = Tensor.Uninitialized(DType.F32, x.Shape);
            TensorPrimitives.Max(x.Span<float>(), 0f, r.Span<float>());
            return r;
        }
        return E.Numeric<E.MaxOp>(x, Tensor.Zeros(x.Type, []));
    }

    public static Tensor FloatPredicate(Tensor x, Func<double, bool> p)
    {
        var r = Tensor.Uninitialized(DType.Bool, x.Shape);
        var o = r.Span<byte>();
        for (var i = 0; i < o.Length; i++) o[i] = (byte)(p(x.GetDouble(i)) ? 1 : 0);
        return r;
    }

    public static Tensor Clip(Tensor x, Tensor? min, Tensor? max)
    {
        var r = x;
        if (min is not null && min.Length > 0) r = E.Numeric<E.MaxOp>(r, min);
        if (max is not null && max.Length > 0) r = E.Numeric<E.MinOp>(r, max);
        return r;
    }

    public static Tensor Pow(Tensor x, Tensor y)
    {
        if (x.Type == DType.F32 && y.Length == 1 && y.GetDouble(0) == 2)
            return E.Numeric<E.MulOp>(x, x);
        if (x.Type == DType.F32 && y.Length == 1 && y.GetDouble(0) == 0.5)
            return E.Float<E.SqrtOp>(x);
        var xd = Cast.To(x, DType.F64);
        var yd = Cast.To(y, DType.F64);
        var r = E.Binary<double, double, PowOp>(xd, yd, DType.F64);
        if (x.Type.IsInteger())
        {
            var l = Tensor.Uninitialized(DType.I64, r.Shape);
            var s = r.Span<double>();
            var o = l.Span<long>();
            for (var i = 0; i < s.Length; i++) o[i] = (long)Math.Round(s[i]);
            return Cast.To(l, x.Type);
        }
        return Cast.To(r, x.Type);
    }

    private struct PowOp : IBinary<double, double>
    {
        public static double Apply(double a, double b) => Math.Pow(a, b);
    }
}

internal static class Logic
{
    public static Tensor Bool(Tensor a, Tensor b, Func<bool, bool, bool> f)
    {
        var shape = Broadcast.Shape(a.Shape, b.Shape);
        var r = Tensor.Uninitialized(DType.Bool, shape);
        var ia = Movement.StridedIndices(shape, Broadcast.StridesFor(a.Shape, shape));
        var ib = Movement.StridedIndices(shape, Broadcast.StridesFor(b.Shape, shape));
        var sa = a.Span<byte>();
        var sb = b.Span<byte>();
        var o = r.Span<byte>();
        for (var i = 0; i < o.Length; i++) o[i] = (byte)(f(sa[(int)ia[i]] != 0, sb[(int)ib[i]] != 0) ? 1 : 0);
        return r;
    }

    public static Tensor Bitwise(Tensor a, Tensor b, Func<long, long, long> f)
    {
        if (!a.Type.IsInteger() || a.Type != b.Type) throw new KernelException($"bitwise ops need two integer tensors of one type, got {a.Type.Name()} and {b.Type.Name()}");
        var shape = Broadcast.Shape(a.Shape, b.Shape);
        var ia = Movement.StridedIndices(shape, Broadcast.StridesFor(a.Shape, shape));
        var ib = Movement.StridedIndices(shape, Broadcast.StridesFor(b.Shape, shape));
        var r = new long[ia.Length];
        var bits = a.Type.Size() * 8;
        for (var i = 0; i < r.Length; i++)
        {
            var x = a.GetLong(ia[i]);
            var y = b.GetLong(ib[i]);
            if (a.Type.IsUnsignedInt() && bits < 64) x &= (1L << bits) - 1;
            r[i] = f(x, y);
        }
        return Cast.To(Tensor.FromArray(DType.I64, shape, r), a.Type);
    }

    public static Tensor BitwiseNot(Tensor a)
    {
        if (!a.Type.IsInteger()) throw new KernelException($"BitwiseNot needs an integer tensor, got {a.Type.Name()}");
        var r = a.ToLongs();
        for (var i = 0; i < r.Length; i++) r[i] = ~r[i];
        return Cast.To(Tensor.FromArray(DType.I64, a.Shape, r), a.Type);
    }

    public static Tensor StringEqual(Tensor a, Tensor b)
    {
        var shape = Broadcast.Shape(a.Shape, b.Shape);
        var ia = Movement.StridedIndices(shape, Broadcast.StridesFor(a.Shape, shape));
        var ib = Movement.StridedIndices(shape, Broadcast.StridesFor(b.Shape, shape));
        var r = Tensor.Uninitialized(DType.Bool, shape);
        var o = r.Span<byte>();
        for (var i = 0; i < o.Length; i++) o[i] = (byte)(a.Strings[ia[i]] == b.Strings[ib[i]] ? 1 : 0);
        return r;
    }
}
