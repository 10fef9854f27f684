using System.Globalization;
using System.Numerics.Tensors;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// Element type conversion between every pair of runtime types, strings included. Integers convert through
/// long (wrapping like C), floats through double (truncating toward zero into integers), f32↔f16 through
/// TensorPrimitives (vectorized).
/// </summary>
public static class Cast
{
    public static Tensor To(Tensor x, DType to)
    {
        if (x.Type == to) return x;
        var r = Tensor.Uninitialized(to, x.Shape);
        if (x.Type == DType.F32 && to == DType.F16) { TensorPrimitives.ConvertToHalf(x.Span<float>(), r.Span<Half>()); return r; }
        if (x.Type == DType.F16 && to == DType.F32) { TensorPrimitives.ConvertToSingle(x.Span<Half>(), r.Span<float>()); return r; }
        var n = (int)x.Length;
        if (to == DType.String)
        {
            var d = r.Strings;
            for (var i = 0; i < n; i++) d[i] = ToText(x, i);
            return r;
        }
        if (x.Type == DType.String)
        {
            var s = x.Strings;
            for (var i = 0; i < n; i++)
            {
                if (to.IsFloat()) Write(r, i, ParseFloat(s[i]));
                else if (to == DType.Bool) WriteLong(r, i, ParseFloat(s[i]) != 0 ? 1 : 0);
                else WriteLong(r, i, long.Parse(s[i], CultureInfo.InvariantCulture));
            }
            return r;
        }
        if (to == DType.Bool)
        {
            var d = r.Span<byte>();
            for (var i = 0; i < n; i++) d[i] = (byte)(x.GetDouble(i) != 0 ? 1 : 0);
            return r;
        }
        if (x.Type.IsFloat() || to.IsFloat())
        {
            if (x.Type == DType.U64 && to.IsFloat())
            {
                var u = x.Span<ulong>();
                for (var i = 0; i < n; i++) Write(r, i, u[i]);
                return r;
            }
            if (x.Type.IsFloat() && to == DType.U64)
            {
                var d = r.Span<ulong>();
                for (var i = 0; i < n; i++) d[i] = (ulong)x.GetDouble(i);
                return r;
            }
            if (x.Type.IsFloat() && to.IsInteger())
            {
                for (var i = 0; i < n; i++)
                {
                    var v = x.GetDouble(i);
                    WriteLong(r, i, double.IsNaN(v) ? 0 : (long)Math.Truncate(v));
                }
                return r;
            }
            for (var i = 0; i < n; i++) Write(r, i, x.Type.IsInteger() || x.Type == DType.Bool ? x.GetLong(i) : x.GetDouble(i));
            return r;
        }
        for (var i = 0; i < n; i++) WriteLong(r, i, x.GetLong(i));
        return r;
    }

    private static void Write(Tensor r, int i, double v)
    {
        switch (r.Type)
        {
            case DType.F32: r.Span<float>()[i] = (float)v; break;
            case DType.F64: r.Span<double>()[i] = v; break;
            case DType.F16: r.Span<Half>()[i] = (Half)v; break;
            // Cast truncates to bfloat16 (the upper 16 bits), as the ONNX reference implementation and its test data do.
            case DType.BF16: r.Span<ushort>()[i] = float.IsNaN((float)v) ? (ushort)0x7FC0 : (ushort)(BitConverter.SingleToUInt32Bits((float)v) >> 16); break;
            case DType.I64 or DType.I32 or DType.I16 or DType.I8 or DType.U8 or DType.Bool or DType.U16 or DType.U32 or DType.U64:
                WriteLong(r, i, (long)v);
                break;
            default: throw Elementwise.Unsupported("Cast", r.Type);
        }
    }

    private static void WriteLong(Tensor r, int i, long v)
    {
        unchecked
        {
            switch (r.Type)
            {
                case DType.I64: r.Span<long>()[i] = v; break;
                case DType.I32: r.Span<int>()[i] = (int)v; break;
                case DType.I16: r.Span<short>()[i] = (short)v; break;
                case DType.I8: r.Span<sbyte>()[i] = (sbyte)v; break;
                case DType.U8: r.Span<byte>()[i] = (byte)v; break;
                case DType.Bool: r.Span<byte>()[i] = (byte)(v != 0 ? 1 : 0); break;
                case DType.U16: r.Span<ushort>()[i] = (ushort)v; break;
                case DType.U32: r.Span<uint>()[i] = (uint)v; break;
                case DType.U64: r.Span<ulong>()[i] = (ulong)v; break;
                case DType.F32 or DType.F64 or DType.F16 or DType.BF16: Write(r, i, v); break;
                default: throw Elementwise.Unsupported("Cast", r.Type);
            }
        }
    }

    private static string ToText(Tensor x, int i)
    {
        if (x.Type == DType.Bool) return x.GetLong(i) != 0 ? "1" : "0";
        if (x.Type.IsInteger()) return x.Type == DType.U64 ? x.Span<ulong>()[i].ToString(CultureInfo.InvariantCulture) : x.GetLong(i).ToString(CultureInfo.InvariantCulture);
        // Shortest text that round-trips the value in its own precision; ONNX spells infinities INF.
        var text = x.Type switch
        {
            DType.F32 => x.Span<float>()[i].ToString("R", CultureInfo.InvariantCulture),
            DType.F16 => x.Span<Half>()[i].ToString(CultureInfo.InvariantCulture),
            DType.BF16 => BFloat16.ToSingle(x.Span<ushort>()[i]).ToString("R", CultureInfo.InvariantCulture),
            _ => x.GetDouble(i).ToString("R", CultureInfo.InvariantCulture),
        };
        return text switch { "∞" or "Infinity" => "INF", "-∞" or "-Infinity" => "-INF", _ => text.Replace("E+", "e+").Replace("E-", "e-") };
    }

    private static double ParseFloat(string s)
    {
        var t = s.Trim();
        switch (t.ToUpperInvariant())
        {
            case "INF" or "+INF" or "INFINITY" or "+INFINITY": return double.PositiveInfinity;
            case "-INF" or "-INFINITY": return double.NegativeInfinity;
            case "NAN" or "-NAN" or "+NAN": return double.NaN;
        }
        return double.Parse(t, NumberStyles.Float, CultureInfo.InvariantCulture);
    }
}
