using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked), DynamicQuantizeLinear.</summary>
internal static class QuantizationOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("QuantizeLinear", "x, y_scale, y_zero_point?", "y", "axis:int=1, block_size:int=0, output_dtype:int=0, saturate:int=1", c =>
        {
            var elem = c.HasInput(2) ? c.Elem(2)
                : c.Int("output_dtype") is var code and not 0 ? OnnxElementCodes.FromCode((int)code) ?? throw c.Fail($"unsupported output_dtype {code}")
                : DType.U8;
            c.Set(0, elem, c.ShapeOf(0));
        }, since: 10);
        r.Add("DequantizeLinear", "x, x_scale, x_zero_point?", "y", "axis:int=1, block_size:int=0", c => c.Set(0, c.Elem(1), c.ShapeOf(0)), since: 10);
        r.Add("DynamicQuantizeLinear", "x", "y, y_scale, y_zero_point", "", c =>
        {
            c.Set(0, DType.U8, c.ShapeOf(0));
            c.Set(1, DType.F32, Shape.Scalar);
            c.Set(2, DType.U8, Shape.Scalar);
        }, since: 11);
    }
}
