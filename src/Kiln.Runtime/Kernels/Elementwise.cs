using System.Numerics;
using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

/// <summary>A binary elementwise operation on one element type. <see cref="Run"/> may handle a whole inner run at once.</summary>
public interface IBinary<T, TR>
{
    static abstract TR Apply(T a, T b);

    /// <summary>Vectorized inner run (strides 0 or 1); returns false to fall back to <see cref="Apply"/>.</summary>
    static virtual bool Run(ReadOnlySpan<T> a, long sa, ReadOnlySpan<T> b, long sb, Span<TR> d) => false;
}

/// <summary>An arithmetic op defined for every numeric type.</summary>
public interface INumericBinary
{
    static abstract T Apply<T>(T a, T b) where T : unmanaged, INumber<T>;

    static virtual bool RunF32(ReadOnlySpan<float> a, long sa, ReadOnlySpan<float> b, long sb, Span<float> d) => false;
}

public interface ICompare
{
    static abstract bool Apply<T>(T a, T b) where T : unmanaged, INumber<T>;
}

public interface IFloatUnary
{
    static abstract T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T>;

    /// <summary>Whole-span float version (TensorPrimitives); false when there is none.</summary>
    static virtual bool RunF32(ReadOnlySpan<float> x, Span<float> d) => false;
}

public interface INumericUnary
{
    static abstract T Apply<T>(T x) where T : unmanaged, INumber<T>;
}

/// <summary>
/// Broadcasting elementwise kernels for every numeric element type. The inner loop runs over a merged
/// contiguous run; float32 Add/Sub/Mul/Div hand those runs to TensorPrimitives (vectorized, as fast as a
/// hand-written loop), everything else uses a scalar loop over the generic op, which the JIT specializes per type.
/// </summary>
public static class Elementwise
{
    public static Tensor Binary<T, TR, TOp>(Tensor a, Tensor b, DType outType)
        where T : unmanaged where TR : unmanaged where TOp : IBinary<T, TR>
    {
        var shape = Broadcast.Shape(a.Shape, b.Shape);
        var r = Tensor.Uninitialized(outType, shape);
        var sa = a.Span<T>();
        var sb = b.Span<T>();
        var so = r.Span<TR>();
        if (r.Length == 0) return r;
        if (a.Length == r.Length && b.Length == r.Length)
        {
            Inner<T, TR, TOp>(sa, 1, sb, 1, so);
            return r;
        }
        var (dims, st) = Broadcast.Plan(shape, [Broadcast.StridesFor(a.Shape, shape), Broadcast.StridesFor(b.Shape, shape)]);
        if (dims.Length == 0)
        {
            so[0] = TOp.Apply(sa[0], sb[0]);
            return r;
        }
        var inner = dims[^1];
        var isa = st[^1][0];
        var isb = st[^1][1];
        var rank = dims.Length;
        var idx = new int[rank];
        long oa = 0, ob = 0, oo = 0;
        while (true)
        {
            Inner<T, TR, TOp>(sa[(int)oa..], isa, sb[(int)ob..], isb, so.Slice((int)oo, inner));
            oo += inner;
            var j = rank - 2;
            for (; j >= 0; j--)
            {
                idx[j]++;
                oa += st[j][0];
                ob += st[j][1];
                if (idx[j] < dims[j]) break;
                oa -= st[j][0] * dims[j];
                ob -= st[j][1] * dims[j];
                idx[j] = 0;
            }
            if (j < 0) return r;
        }
    }

    private static void Inner<T, TR, TOp>(ReadOnlySpan<T> a, long sa, ReadOnlySpan<T> b, long sb, Span<TR> d)
        where T : unmanaged where TR : unmanaged where TOp : IBinary<T, TR>
    {
        if (TOp.Run(a, sa, b, sb, d)) return;
        int ia = 0, ib = 0;
        for (var i = 0; i < d.Length; i++, ia += (int)sa, ib += (int)sb) d[i] = TOp.Apply(a[ia], b[ib]);
    }

    private struct NumericAdapter<TOp, T> : IBinary<T, T> where TOp : INumericBinary where T : unmanaged, INumber<T>
    {
        public static T Apply(T a, T b) => TOp.Apply(a, b);

        public static bool Run(ReadOnlySpan<T> a, long sa, ReadOnlySpan<T> b, long sb, Span<T> d) =>
            typeof(T) == typeof(float) && TOp.RunF32(Cast<T, float>(a), sa, Cast<T, float>(b), sb, Cast<T, float>(d));
    }

    private struct CompareAdapter<TOp, T> : IBinary<T, bool> where TOp : ICompare where T : unmanaged, INumber<T>
    {
        public static bool Apply(T a, T b) => TOp.Apply(a, b);
    }

    internal static ReadOnlySpan<TTo> Cast<TFrom, TTo>(ReadOnlySpan<TFrom> s) where TFrom : unmanaged where TTo : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<TFrom, TTo>(s);

    internal static Span<TTo> Cast<TFrom, TTo>(Span<TFrom> s) where TFrom : unmanaged where TTo : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<TFrom, TTo>(s);

    /// <summary>An arithmetic op on two tensors of the same numeric type, with broadcasting.</summary>
    public static Tensor Numeric<TOp>(Tensor a, Tensor b) where TOp : INumericBinary
    {
        SameType(a, b);
        return a.Type switch
        {
            DType.F32 => Binary<float, float, NumericAdapter<TOp, float>>(a, b, a.Type),
            DType.F64 => Binary<double, double, NumericAdapter<TOp, double>>(a, b, a.Type),
            DType.F16 => Binary<Half, Half, NumericAdapter<TOp, Half>>(a, b, a.Type),
            DType.BF16 => Bf16(a, b, static (x, y) => Numeric<TOp>(x, y)),
            DType.I64 => Binary<long, long, NumericAdapter<TOp, long>>(a, b, a.Type),
            DType.I32 => Binary<int, int, NumericAdapter<TOp, int>>(a, b, a.Type),
            DType.I16 => Binary<short, short, NumericAdapter<TOp, short>>(a, b, a.Type),
            DType.I8 => Binary<sbyte, sbyte, NumericAdapter<TOp, sbyte>>(a, b, a.Type),
            DType.U8 => Binary<byte, byte, NumericAdapter<TOp, byte>>(a, b, a.Type),
            DType.U16 => Binary<ushort, ushort, NumericAdapter<TOp, ushort>>(a, b, a.Type),
            DType.U32 => Binary<uint, uint, NumericAdapter<TOp, uint>>(a, b, a.Type),
            DType.U64 => Binary<ulong, ulong, NumericAdapter<TOp, ulong>>(a, b, a.Type),
            _ => throw Unsupported(typeof(TOp).Name, a.Type),
        };
    }

    /// <summary>A comparison on two tensors of the same numeric type; bool result.</summary>
    public static Tensor Compare<TOp>(Tensor a, Tensor b) where TOp : ICompare
    {
        SameType(a, b);
        return a.Type switch
        {
            DType.F32 => Binary<float, bool, CompareAdapter<TOp, float>>(a, b, DType.Bool),
            DType.F64 => Binary<double, bool, CompareAdapter<TOp, double>>(a, b, DType.Bool),
            DType.F16 => Binary<Half, bool, CompareAdapter<TOp, Half>>(a, b, DType.Bool),
            DType.BF16 => Compare<TOp>(Kernels.Cast.To(a, DType.F32), Kernels.Cast.To(b, DType.F32)),
            DType.I64 => Binary<long, bool, CompareAdapter<TOp, long>>(a, b, DType.Bool),
            DType.I32 => Binary<int, bool, CompareAdapter<TOp, int>>(a, b, DType.Bool),
            DType.I16 => Binary<short, bool, CompareAdapter<TOp, short>>(a, b, DType.Bool),
            DType.I8 => Binary<sbyte, bool, CompareAdapter<TOp, sbyte>>(a, b, DType.Bool),
            DType.U8 or DType.Bool => Binary<byte, bool, CompareAdapter<TOp, byte>>(a, b, DType.Bool),
            DType.U16 => Binary<ushort, bool, CompareAdapter<TOp, ushort>>(a, b, DType.Bool),
            DType.U32 => Binary<uint, bool, CompareAdapter<TOp, uint>>(a, b, DType.Bool),
            DType.U64 => Binary<ulong, bool, CompareAdapter<TOp, ulong>>(a, b, DType.Bool),
            _ => throw Unsupported(typeof(TOp).Name, a.Type),
        };
    }

    public static Tensor Unary<T, TR>(Tensor x, DType outType, Func<T, TR> f) where T : unmanaged where TR : unmanaged
    {
        var r = Tensor.Uninitialized(outType, x.Shape);
        var s = x.Span<T>();
        var d = r.Span<TR>();
        for (var i = 0; i < s.Length; i++) d[i] = f(s[i]);
        return r;
    }

    /// <summary>A float function (exp, sin, …) on f32/f64/f16/bf16 tensors.</summary>
    public static Tensor Float<TOp>(Tensor x) where TOp : IFloatUnary
    {
        switch (x.Type)
        {
            case DType.F32:
                {
                    var r = Tensor.Uninitialized(DType.F32, x.Shape);
                    if (!TOp.RunF32(x.Span<float>(), r.Span<float>())) FloatLoop<float, TOp>(x.Span<float>(), r.Span<float>());
                    return r;
                }
            case DType.F64:
                {
                    var r = Tensor.Uninitialized(DType.F64, x.Shape);
                    FloatLoop<double, TOp>(x.Span<double>(), r.Span<double>());
                    return r;
                }
            case DType.F16:
                {
                    var r = Tensor.Uninitialized(DType.F16, x.Shape);
                    FloatLoop<Half, TOp>(x.Span<Half>(), r.Span<Half>());
                    return r;
                }
            case DType.BF16:
                return Kernels.Cast.To(Float<TOp>(Kernels.Cast.To(x, DType.F32)), DType.BF16);
            default:
                throw Unsupported(typeof(TOp).Name, x.Type);
        }
    }

    private static void FloatLoop<T, TOp>(ReadOnlySpan<T> s, Span<T> d) where T : unmanaged, IFloatingPointIeee754<T> where TOp : IFloatUnary
    {
        for (var i = 0; i < s.Length; i++) d[i] = TOp.Apply(s[i]);
    }

    /// <summary>A numeric function (abs, neg, …) on any numeric tensor.</summary>
    public static Tensor NumericUnary<TOp>(Tensor x) where TOp : INumericUnary => x.Type switch
    {
        DType.F32 => NumLoop<float, TOp>(x),
        DType.F64 => NumLoop<double, TOp>(x),
        DType.F16 => NumLoop<Half, TOp>(x),
        DType.BF16 => Kernels.Cast.To(NumericUnary<TOp>(Kernels.Cast.To(x, DType.F32)), DType.BF16),
        DType.I64 => NumLoop<long, TOp>(x),
        DType.I32 => NumLoop<int, TOp>(x),
        DType.I16 => NumLoop<short, TOp>(x),
        DType.I8 => NumLoop<sbyte, TOp>(x),
        DType.U8 => NumLoop<byte, TOp>(x),
        DType.U16 => NumLoop<ushort, TOp>(x),
        DType.U32 => NumLoop<uint, TOp>(x),
        DType.U64 => NumLoop<ulong, TOp>(x),
        _ => throw Unsupported(typeof(TOp).Name, x.Type),
    };

    private static Tensor NumLoop<T, TOp>(Tensor x) where T : unmanaged, INumber<T> where TOp : INumericUnary
    {
        var r = Tensor.Uninitialized(x.Type, x.Shape);
        var s = x.Span<T>();
        var d = r.Span<T>();
        for (var i = 0; i < s.Length; i++) d[i] = TOp.Apply(s[i]);
        return r;
    }

    private static Tensor Bf16(Tensor a, Tensor b, Func<Tensor, Tensor, Tensor> f) =>
        Kernels.Cast.To(f(Kernels.Cast.To(a, DType.F32), Kernels.Cast.To(b, DType.F32)), DType.BF16);

    public static void SameType(Tensor a, Tensor b)
    {
        if (a.Type != b.Type) throw new KernelException($"element types differ: {a.Type.Name()} and {b.Type.Name()}");
    }

    public static KernelException Unsupported(string op, DType t) =>
        new($"{op.Replace("Op", "")} is not defined for {t.Name()} tensors");

    // ---- the ops -------------------------------------------------------------------------------------------

    public struct AddOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a + b;

        public static bool RunF32(ReadOnlySpan<float> a, long sa, ReadOnlySpan<float> b, long sb, Span<float> d)
        {
            if (sa == 1 && sb == 1) TensorPrimitives.Add(a[..d.Length], b[..d.Length], d);
            else if (sa == 1 && sb == 0) TensorPrimitives.Add(a[..d.Length], b[0], d);
            else if (sa == 0 && sb == 1) TensorPrimitives.Add(b[..d.Length], a[0], d);
            else return false;
            return true;
        }
    }

    public struct SubOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a - b;

        public static bool RunF32(ReadOnlySpan<float> a, long sa, ReadOnlySpan<float> b, long sb, Span<float> d)
        {
            if (sa == 1 && sb == 1) TensorPrimitives.Subtract(a[..d.Length], b[..d.Length], d);
            else if (sa == 1 && sb == 0) TensorPrimitives.Subtract(a[..d.Length], b[0], d);
            else if (sa == 0 && sb == 1) TensorPrimitives.Subtract(a[0], b[..d.Length], d);
            else return false;
            return true;
        }
    }

    public struct MulOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a * b;

        public static bool RunF32(ReadOnlySpan<float> a, long sa, ReadOnlySpan<float> b, long sb, Span<float> d)
        {
            if (sa == 1 && sb == 1) TensorPrimitives.Multiply(a[..d.Length], b[..d.Length], d);
            else if (sa == 1 && sb == 0) TensorPrimitives.Multiply(a[..d.Length], b[0], d);
            else if (sa == 0 && sb == 1) TensorPrimitives.Multiply(b[..d.Length], a[0], d);
            else return false;
            return true;
        }
    }

    public struct DivOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> =>
            !IsFloatType<T>() && T.IsZero(b) ? throw new KernelException("integer division by zero") : a / b;

        public static bool RunF32(ReadOnlySpan<float> a, long sa, ReadOnlySpan<float> b, long sb, Span<float> d)
        {
            if (sa == 1 && sb == 1) TensorPrimitives.Divide(a[..d.Length], b[..d.Length], d);
            else if (sa == 1 && sb == 0) TensorPrimitives.Divide(a[..d.Length], b[0], d);
            else if (sa == 0 && sb == 1) TensorPrimitives.Divide(a[0], b[..d.Length], d);
            else return false;
            return true;
        }
    }

    internal static bool IsFloatType<T>() => typeof(T) == typeof(float) || typeof(T) == typeof(double) || typeof(T) == typeof(Half);

    public struct MaxOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => T.IsNaN(a) || T.IsNaN(b) ? (T.IsNaN(a) ? a : b) : T.Max(a, b);
    }

    public struct MinOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> => T.IsNaN(a) || T.IsNaN(b) ? (T.IsNaN(a) ? a : b) : T.Min(a, b);
    }

    /// <summary>Integer Mod with fmod=0: the result takes the divisor's sign (Python's %).</summary>
    public struct ModOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T>
        {
            if (T.IsZero(b)) throw new KernelException("Mod by zero");
            var m = a % b;
            if (!T.IsZero(m) && (T.IsNegative(m) != T.IsNegative(b))) m += b;
            return m;
        }
    }

    /// <summary>fmod=1: the result takes the dividend's sign (C's fmod).</summary>
    public struct FModOp : INumericBinary
    {
        public static T Apply<T>(T a, T b) where T : unmanaged, INumber<T> =>
            IsFloatType<T>() ? a % b :
            T.IsZero(b) ? throw new KernelException("Mod by zero") : a % b;
    }

    public struct EqualOp : ICompare { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a == b; }

    public struct LessOp : ICompare { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a < b; }

    public struct LessOrEqualOp : ICompare { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a <= b; }

    public struct GreaterOp : ICompare { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a > b; }

    public struct GreaterOrEqualOp : ICompare { public static bool Apply<T>(T a, T b) where T : unmanaged, INumber<T> => a >= b; }

    public struct ExpOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Exp(x);
        public static bool RunF32(ReadOnlySpan<float> x, Span<float> d) { TensorPrimitives.Exp(x, d); return true; }
    }

    public struct LogOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Log(x);
        public static bool RunF32(ReadOnlySpan<float> x, Span<float> d) { TensorPrimitives.Log(x, d); return true; }
    }

    public struct SqrtOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Sqrt(x);
        public static bool RunF32(ReadOnlySpan<float> x, Span<float> d) { TensorPrimitives.Sqrt(x, d); return true; }
    }

    public struct TanhOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Tanh(x);
        public static bool RunF32(ReadOnlySpan<float> x, Span<float> d) { TensorPrimitives.Tanh(x, d); return true; }
    }

    public struct SigmoidOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));
        public static bool RunF32(ReadOnlySpan<float> x, Span<float> d) { TensorPrimitives.Sigmoid(x, d); return true; }
    }

    public struct ReciprocalOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.One / x;
        public static bool RunF32(ReadOnlySpan<float> x, Span<float> d) { TensorPrimitives.Divide(1f, x, d); return true; }
    }

    public struct SinOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Sin(x); }
    public struct CosOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Cos(x); }
    public struct TanOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Tan(x); }
    public struct AsinOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Asin(x); }
    public struct AcosOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Acos(x); }
    public struct AtanOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Atan(x); }
    public struct SinhOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Sinh(x); }
    public struct CoshOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Cosh(x); }
    public struct AsinhOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Asinh(x); }
    public struct AcoshOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Acosh(x); }
    public struct AtanhOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Atanh(x); }
    public struct CeilOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Ceiling(x); }
    public struct FloorOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Floor(x); }

    /// <summary>Round half to even, as ONNX specifies.</summary>
    public struct RoundOp : IFloatUnary { public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Round(x, MidpointRounding.ToEven); }

    public struct ErfOp : IFloatUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.CreateChecked(SpecialFunctions.Erf(double.CreateChecked(x)));
    }

    public struct AbsOp : INumericUnary { public static T Apply<T>(T x) where T : unmanaged, INumber<T> => T.Abs(x); }

    public struct NegOp : INumericUnary { public static T Apply<T>(T x) where T : unmanaged, INumber<T> => -x; }

    public struct SignOp : INumericUnary
    {
        public static T Apply<T>(T x) where T : unmanaged, INumber<T> => T.IsNaN(x) ? x : T.IsZero(x) ? T.Zero : T.IsNegative(x) ? -T.One : T.One;
    }
}

public static class SpecialFunctions
{
    /// <summary>erf(x) to about 1e-15 (series for small |x|, continued fraction for large).</summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        var ax = Math.Abs(x);
        if (ax < 2.5)
        {
            // Maclaurin series: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
            double sum = ax, term = ax, x2 = ax * ax;
            for (var n = 1; n < 100; n++)
            {
                term *= -x2 / n;
                var add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            var r = 2 / Math.Sqrt(Math.PI) * sum;
            return x < 0 ? -r : r;
        }
        if (ax > 6) return x < 0 ? -1 : 1;
        // erfc via continued fraction (Lentz).
        double f = ax, c = ax, d = 0, tiny = 1e-300;
        for (var n = 1; n < 200; n++)
        {
            var an = n / 2.0;
            d = ax + an * d;
            d = Math.Abs(d) < tiny ? tiny : d;
            c = ax + an / c;
            c = Math.Abs(c) < tiny ? tiny : c;
            d = 1 / d;
            var delta = c * d;
            f *= delta;
            if (Math.Abs(delta - 1) < 1e-16) break;
        }
        var erfc = Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        return x < 0 ? erfc - 1 : 1 - erfc;
    }
}
