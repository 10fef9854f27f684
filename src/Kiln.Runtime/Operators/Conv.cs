using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Conv family: convolutions (Conv, ConvTranspose, ConvInteger, QLinearConv). The ops are declared in Kiln.Ir/Ops/ConvOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterConv(Dictionary<string, Action<OpContext>> d)
    {
        d["Conv"] = c =>
        {
            var x = c.In(0);
            var w = c.In(1);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad"));
            c.Set(0, Convolution.Conv(x, w, c.Opt(2), win, (int)c.Int("group")));
        };
        d["ConvTranspose"] = c =>
        {
            var x = c.In(0);
            var w = c.In(1);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            c.Set(0, Convolution.ConvTranspose(x, w, c.Opt(2), kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"),
                c.Str("auto_pad"), c.Ints("output_padding"), c.Ints("output_shape"), (int)c.Int("group")));
        };
        d["ConvInteger"] = c =>
        {
            var x = Centered(c.In(0), c.Opt(2), ZeroPointAxis.Channels);
            var w = Centered(c.In(1), c.Opt(3), ZeroPointAxis.Filters);
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad"));
            c.Set(0, Cast.To(Convolution.Conv(x, w, null, win, (int)c.Int("group")), DType.I32));
        };
        d["QLinearConv"] = c =>
        {
            var x = Quantize.Dequantize(c.In(0), c.In(1), c.In(2), 1, 0);
            var w = Quantize.Dequantize(c.In(3), c.In(4), c.In(5), 0, 0);
            var bias = c.Opt(8) is { } bt ? Cast.To(QLinearBias(bt, c.In(1), c.In(4)), DType.F32) : null;
            var kernel = c.Ints("kernel_shape")?.Select(v => (int)v).ToArray() ?? w.Shape[2..];
            var win = Window.Resolve(x.Shape[2..], kernel, c.Ints("strides"), c.Ints("dilations"), c.Ints("pads"), c.Str("auto_pad"));
            var y = Convolution.Conv(Cast.To(x, DType.F32), Cast.To(w, DType.F32), bias, win, (int)c.Int("group"));
            c.Set(0, Quantize.Linear(y, c.In(6), c.In(7), 1, 0, c.In(7).Type));
        };
    }
}
