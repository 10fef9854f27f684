using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the pooling family (Ir/Ops/PoolingOps): global and windowed Max/Average pooling over 2-D images, nearest Resize by whole factors.</summary>
internal static class PoolingKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        foreach (var (op, max) in new[] { ("GlobalAveragePool", false), ("GlobalMaxPool", true) })
            d[op] = new(
                c => c.In(0) is { Elem: DType.F32, Rank: >= 3 } ? null : "f32 with spatial dims",
                c =>
                {
                    var x = c.In(0)!;
                    c.Body.Line($"Kernels.ArenaKernels.GlobalPool({x.Span}, planes: {x.Dims[0]} * {x.Dims[1]}, inner: {PlannedOperand.CountOf(x.Dims[2..])}, {c.Out(0)!.Span}, max: {(max ? "true" : "false")});");
                });
        foreach (var (op, max) in new[] { ("MaxPool", true), ("AveragePool", false) })
            d[op] = new(
                c =>
                {
                    var n = c.Node;
                    if (c.In(0) is not { Elem: DType.F32, Rank: 4 }) return "f32 2-D images";
                    if (c.Out(1) is not null) return "no indices wanted";
                    if (n.AttrString("auto_pad") is not ("NOTSET" or "" or "VALID")) return "explicit pads";
                    return ConvKernels.Ints(n, "kernel_shape") is { Length: 2 } ? null : "a 2-D kernel";
                },
                c =>
                {
                    var (x, y) = (c.In(0)!, c.Out(0)!);
                    var k = ConvKernels.Ints(c.Node, "kernel_shape")!;
                    var window = ConvKernels.Window(c, k[0].ToString(System.Globalization.CultureInfo.InvariantCulture), k[1].ToString(System.Globalization.CultureInfo.InvariantCulture));
                    var includePad = !max && c.Node.AttrInt("count_include_pad") != 0;
                    c.Body.Line($"Kernels.ArenaKernels.Pool2D({x.Span}, planes: {x.Dims[0]} * {x.Dims[1]}, h: {x.Dims[2]}, wd: {x.Dims[3]}, {y.Span}, oh: {y.Dims[2]}, ow: {y.Dims[3]}, {window}, max: {(max ? "true" : "false")}, countIncludePad: {(includePad ? "true" : "false")});");
                }) { SeveralOutputs = max };
        d["Resize"] = new(
            c => c.In(0) is { Elem: DType.F32, Rank: 4 } && Factors(c) is not null ? null : "nearest, asymmetric and floor, by whole constant factors on H and W",
            c =>
            {
                var (x, y) = (c.In(0)!, c.Out(0)!);
                var (fy, fx) = Factors(c)!.Value;
                c.Body.Line($"Kernels.ArenaKernels.ResizeNearest({x.Span}, planes: {x.Dims[0]} * {x.Dims[1]}, h: {x.Dims[2]}, wd: {x.Dims[3]}, {y.Span}, fy: {fy}, fx: {fx});");
            });
    }

    /// <summary>The whole H and W factors of a nearest Resize whose constant scales keep N and C, or null.</summary>
    private static (int Y, int X)? Factors(PlannedNodeContext c)
    {
        var n = c.Node;
        if (n.AttrString("mode") != "nearest" || n.AttrString("coordinate_transformation_mode") != "asymmetric" || n.AttrString("nearest_mode") != "floor") return null;
        if (n.Attr<IntsAttr>("axes") is not null || c.In(3) is not null || c.In(2)?.Value.Data is not { Elem: DType.F32, ElementCount: 4 } data) return null;
        var s = data.ToArray<float>();
        if (s[0] != 1 || s[1] != 1 || s[2] < 1 || s[3] < 1 || s[2] != MathF.Floor(s[2]) || s[3] != MathF.Floor(s[3])) return null;
        return ((int)s[2], (int)s[3]);
    }
}
