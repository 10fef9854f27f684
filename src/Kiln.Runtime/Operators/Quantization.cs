using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Quantization family: quantization (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear). The ops are declared in Kiln.Ir/Ops/QuantizationOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterQuantization(Dictionary<string, Action<OpContext>> d)
    {
        d["QuantizeLinear"] = c =>
        {
            var x = c.In(0);
            var zp = c.Opt(2);
            var outType = zp?.Type ?? c.ElemAttr("output_dtype", DType.U8);
            c.Set(0, Quantize.Linear(x, c.In(1), zp, c.In(1).Length == 1 ? 0 : Movement.NormalizeAxis(c.Int("axis"), x.Rank, "QuantizeLinear"), (int)c.Int("block_size"), outType));
        };
        d["DequantizeLinear"] = c =>
        {
            var x = c.In(0);
            c.Set(0, Quantize.Dequantize(x, c.In(1), c.Opt(2), c.In(1).Length == 1 ? 0 : Movement.NormalizeAxis(c.Int("axis"), x.Rank, "DequantizeLinear"), (int)c.Int("block_size")));
        };
        d["DynamicQuantizeLinear"] = c =>
        {
            var (y, s, z) = Quantize.Dynamic(c.In(0));
            c.Set(0, y);
            c.Set(1, s);
            c.Set(2, z);
        };
    }

    private enum ZeroPointAxis { RowsOfA, ColumnsOfB, Channels, Filters }

    /// <summary>An integer tensor minus its zero point, as f32 (exact for 8-bit data). A per-axis zero point applies to
    /// A's rows (MatMulInteger a_zero_point), B's columns (b_zero_point), input channels or filters (ConvInteger x / w).</summary>
    private static Tensor Centered(Tensor x, Tensor? zp, ZeroPointAxis axis)
    {
        var f = Cast.To(x, DType.F32);
        if (zp is null) return f;
        var z = Cast.To(zp, DType.F32);
        if (z.Length > 1)
        {
            var shape = Enumerable.Repeat(1, x.Rank).ToArray();
            shape[axis switch { ZeroPointAxis.RowsOfA => x.Rank - 2, ZeroPointAxis.ColumnsOfB => x.Rank - 1, ZeroPointAxis.Filters => 0, _ => 1 }] = (int)z.Length;
            z = z.Reshape(shape);
        }
        return Elementwise.Numeric<Elementwise.SubOp>(f, z);
    }

    /// <summary>QLinearConv bias: int32 in units of x_scale·w_scale.</summary>
    private static Tensor QLinearBias(Tensor bias, Tensor xScale, Tensor wScale)
    {
        var b = bias.ToDoubles();
        var xs = xScale.GetDouble(0);
        var ws = wScale.ToDoubles();
        return Movement.FromDoubles(DType.F64, bias.Shape, b.Select((v, i) => v * xs * ws[ws.Length == 1 ? 0 : i]).ToArray());
    }
}
