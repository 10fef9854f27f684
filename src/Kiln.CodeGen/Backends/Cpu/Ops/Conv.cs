using System.Globalization;
using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>
/// Planned CPU kernels of the conv family (Ir/Ops/ConvOps, and kiln:ConvActivation): 2-D Conv of every group count
/// (depthwise, grouped, strided, dilated, padded) with its fused activation, and ConvTranspose whose kernel tiles the
/// output. The window is a static field of the class; the kernels allocate nothing after warm-up.
/// </summary>
internal static class ConvKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Conv"] = new(Unsupported, c => Emit(c, activation: null));
        d[KilnOp.Qualified.ConvActivation] = new(Unsupported, c => Emit(c, c.Node.AttrString("activation")));
        d["ConvTranspose"] = new(
            c =>
            {
                if (Operands(c) is { } why) return why;
                var w = c.In(1)!;
                var (n, kernel) = (c.Node, Ints(c.Node, "kernel_shape") ?? [.. w.Dims.Skip(2).Select(int.Parse)]);
                var strides = Ints(n, "strides") ?? [1, 1];
                return n.AttrInt("group") == 1 && kernel.SequenceEqual(strides) && (Ints(n, "dilations") ?? [1, 1]).All(v => v == 1)
                    && (Ints(n, "pads") ?? [0, 0, 0, 0]).All(v => v == 0) && (Ints(n, "output_padding") ?? [0, 0]).All(v => v == 0)
                    && n.Attr<IntsAttr>("output_shape") is null && n.AttrString("auto_pad") is "NOTSET" or "" or "VALID"
                    ? null : "a kernel equal to its stride (no pads, dilation, output padding or groups)";
            },
            c =>
            {
                var (x, w, y) = (c.In(0)!, c.In(1)!, c.Out(0)!);
                var bias = c.In(2)?.WeightField ?? "null";
                c.Body.Line($"Kernels.Convolution.TilingTranspose2D({x.Span}, n: {x.Dims[0]}, c: {x.Dims[1]}, h: {x.Dims[2]}, wd: {x.Dims[3]}, {w.WeightField}, {bias}, sh: {w.Dims[2]}, sw: {w.Dims[3]}, {y.Span});");
            });
    }

    /// <summary>f32 4-D activations and a constant 4-D weight (and bias); null when they fit.</summary>
    private static string? Operands(PlannedNodeContext c) =>
        c.In(0) is { Elem: DType.F32, Rank: 4 } && c.In(1) is { Elem: DType.F32, Rank: 4, Storage: PlannedStorage.Constant }
        && c.In(2) is null or { Elem: DType.F32, Storage: PlannedStorage.Constant } ? null : "f32 2-D images with constant weights";

    private static string? Unsupported(PlannedNodeContext c)
    {
        if (Operands(c) is { } why) return why;
        var n = c.Node;
        if (n.AttrString("auto_pad") is not ("NOTSET" or "" or "VALID")) return "explicit pads (auto_pad SAME sizes its pads per input)";
        if (Ints(n, "kernel_shape") is { } k && !k.SequenceEqual(c.In(1)!.Dims.Skip(2).Select(int.Parse))) return "a kernel_shape matching the weight";
        if (n.QualifiedOp == KilnOp.Qualified.ConvActivation && n.AttrString("activation") is not ("" or "Relu" or "LeakyRelu" or "Sigmoid" or "Tanh" or "HardSigmoid" or "HardSwish" or "Clip"))
            return $"a fused activation the kernels know, not {n.AttrString("activation")}";
        return null;
    }

    private static void Emit(PlannedNodeContext c, string? activation)
    {
        var (x, w, y) = (c.In(0)!, c.In(1)!, c.Out(0)!);
        var window = Window(c, w.Dims[2], w.Dims[3]);
        var bias = c.In(2)?.WeightField ?? "null";
        c.Body.Line($"Kernels.Convolution.Conv2D({x.Span}, n: {x.Dims[0]}, c: {x.Dims[1]}, h: {x.Dims[2]}, wd: {x.Dims[3]}, {w.WeightField}, {bias}, {window}, group: {c.Node.AttrInt("group")}, {y.Span}, oh: {y.Dims[2]}, ow: {y.Dims[3]});");
        if (activation is null or "") return;
        // kiln:ConvActivation's parameters: LeakyRelu [alpha], HardSigmoid [alpha, beta], Clip [min, max].
        var p = c.Node.Attr<FloatsAttr>("activation_params")?.Value ?? [];
        string F(int i, string fallback) => i < p.Length ? CSharp.Float(p[i]) : fallback;
        c.Body.Line($"Kernels.Fused.Activate({y.Span}, {CSharp.String(activation)}, alpha: {F(0, "0.01f")}, beta: {F(1, "0.5f")}, min: {F(0, "float.MinValue")}, max: {F(1, "float.MaxValue")});");
    }

    /// <summary>The node's 2-D window (kernel, strides, dilations, pads) as a static field of the class.</summary>
    public static string Window(PlannedNodeContext c, string kh, string kw)
    {
        var n = c.Node;
        var strides = Ints(n, "strides") ?? [1, 1];
        var dilations = Ints(n, "dilations") ?? [1, 1];
        var pads = n.AttrString("auto_pad") == "VALID" ? [0, 0, 0, 0] : Ints(n, "pads") ?? [0, 0, 0, 0];
        string List(IEnumerable<int> v) => "[" + string.Join(", ", v.Select(i => i.ToString(CultureInfo.InvariantCulture))) + "]";
        var ceil = n.Attr<IntAttr>("ceil_mode")?.Value == 1 ? " { CeilMode = true }" : "";
        return c.Static("Kernels.Window", "Window", $"new Kernels.Window([{kh}, {kw}], {List(strides)}, {List(dilations)}, {List(pads.Take(2))}, {List(pads.Skip(2))}){ceil}");
    }

    /// <summary>An ints attribute as ints, or null when absent.</summary>
    public static int[]? Ints(Node n, string name) => n.Attr<IntsAttr>(name)?.Value.Select(v => checked((int)v)).ToArray();
}
