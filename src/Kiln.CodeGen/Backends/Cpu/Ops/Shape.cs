using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the shape family (Ir/Ops/ShapeOps): Range, Transpose, Concat (a KV-cache append included), Split, Slice, Pad.</summary>
internal static class ShapeKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Range"] = new(
            c => ElementwiseKernels.Numeric(c.Out(0)!.Elem) ? null : "numeric range",
            c => c.Body.Line($"Kernels.ArenaKernels.Range<{c.Out(0)!.ClrType}>({c.In(0)!.Span}[0], {c.In(2)!.Span}[0], {c.Out(0)!.Span});"));
        d["Transpose"] = new(
            c => c.In(0)!.ClrType != "" && c.In(0)!.Rank <= 8 ? null : "rank ≤ 8",
            c =>
            {
                var x = c.In(0)!;
                var perm = c.Node.Attr<IntsAttr>("perm")?.Value.Select(v => (int)v).ToArray() ?? Enumerable.Range(0, x.Rank).Reverse().ToArray();
                c.Body.Line($"Kernels.ArenaKernels.Transpose<{x.ClrType}>({x.Span}, {x.Shape}, stackalloc int[] {{ {string.Join(", ", perm)} }}, {c.Out(0)!.Span});");
            });
        d["Concat"] = new(c => c.Out(0)!.ClrType != "" ? null : "numeric", EmitConcat);
        d["Pad"] = new(
            c => c.In(0) is { Rank: > 0 and <= 8 } x && x.ClrType != "" && PadsBefore(c) is not null && c.In(2) is null or { Rank: 0 } or { Dims: ["1"] }
                ? null : "constant mode, constant non-negative pads",
            c =>
            {
                var (x, y) = (c.In(0)!, c.Out(0)!);
                var value = c.In(2) is { } v ? $"{v.Span}[0]" : "default";
                c.Body.Line($"Kernels.ArenaKernels.Pad<{x.ClrType}>({x.Span}, {x.Shape}, stackalloc long[] {{ {string.Join(", ", PadsBefore(c)!)} }}, {value}, {y.Span}, {y.Shape});");
            });
        d["Split"] = new(
            c => c.In(0)!.ClrType != "" && c.In(0)!.Rank > 0 && Enumerable.Range(0, c.Node.Outputs.Length).All(i => c.Out(i) is not null) ? null : "numeric, every output wanted",
            EmitSplit) { SeveralOutputs = true };
        d["Slice"] = new(
            c => c.In(0)!.ClrType != "" && c.In(0)!.Rank is > 0 and <= 8 && Enumerable.Range(1, 4).All(i => c.In(i) is null || c.In(i)!.Elem == DType.I64)
                ? null : "numeric data with i64 starts, axes and steps",
            c =>
            {
                var (x, y) = (c.In(0)!, c.Out(0)!);
                string Or(int i) => c.In(i)?.Span ?? "default";
                c.Body.Line($"Kernels.ArenaKernels.Slice<{x.ClrType}>({x.Span}, {x.Shape}, {c.In(1)!.Span}, {Or(3)}, {Or(4)}, {y.Span}, {y.Shape});");
            });
    }

    /// <summary>Constant Pad's leading pads per axis, from constant pads (and axes), all ≥ 0; null otherwise.</summary>
    private static long[]? PadsBefore(PlannedNodeContext c)
    {
        var rank = c.In(0)!.Rank;
        if (c.Node.AttrString("mode") != "constant" || c.In(1)?.Value.Data is not { } padsData) return null;
        var pads = padsData.ToInt64Array();
        var axes = Enumerable.Range(0, rank).Select(a => (long)a).ToArray();
        if (c.In(3) is { } axesOperand)
        {
            if (axesOperand.Value.Data is not { } axesData) return null;
            axes = [.. axesData.ToInt64Array().Select(a => a < 0 ? a + rank : a)];
        }
        if (pads.Length != 2 * axes.Length || pads.Any(p => p < 0)) return null;
        var before = new long[rank];
        for (var i = 0; i < axes.Length; i++) before[axes[i]] = pads[i];
        return before;
    }

    /// <summary>Each present output copied out of its place along the axis (the plan's dims say how long each part is).</summary>
    private static void EmitSplit(PlannedNodeContext c)
    {
        var x = c.In(0)!;
        var axis = (int)c.Node.AttrInt("axis");
        if (axis < 0) axis += x.Rank;
        var outer = axis == 0 ? "1" : "(" + string.Join(" * ", x.Dims.Take(axis)) + ")";
        var block = "(" + string.Join(" * ", x.Dims.Skip(axis)) + ")";
        var offset = "0";
        for (var i = 0; i < c.Node.Outputs.Length; i++)
        {
            var y = c.Out(i)!;
            var part = "(" + string.Join(" * ", y.Dims.Skip(axis)) + ")";
            c.Body.Line($"Kernels.ArenaKernels.SplitPart<{x.ClrType}>({x.Span}, {outer}, {block}, {offset}, {y.Span}, {part});");
            offset = offset == "0" ? part : offset + " + " + part;
        }
    }


    private static void EmitConcat(PlannedNodeContext c)
    {
        var w = c.Body;
        var y = c.Out(0)!;
        var rank = y.Rank;
        var axis = (int)c.Node.AttrInt("axis");
        if (axis < 0) axis += rank;
        if (y.Storage == PlannedStorage.KvCache)
        {
            // The past already sits in the cache: only the new positions are written, after it.
            var fresh = c.In(1)!;
            if (y.KvScales is { } scales)
                w.Line($"Kernels.ArenaKernels.KvAppendInt8({fresh.Span}, {y.Span}, {scales}, heads: {fresh.Dims[0]} * {fresh.Dims[1]}, seq: {fresh.Dims[2]}, d: {fresh.Dims[3]}, past: cache.Length, capacity: cache.Capacity);");
            else
                w.Line($"Kernels.ArenaKernels.KvAppend({fresh.Span}, {y.Span}, heads: {fresh.Dims[0]} * {fresh.Dims[1]}, seq: {fresh.Dims[2]}, d: {fresh.Dims[3]}, past: cache.Length, capacity: cache.Capacity);");
            return;
        }
        var outer = axis == 0 ? "1" : "(" + string.Join(" * ", y.Dims.Take(axis)) + ")";
        var block = "(" + string.Join(" * ", y.Dims.Skip(axis)) + ")";
        var offset = "0";
        for (var i = 0; i < c.InputCount; i++)
        {
            var x = c.In(i)!;
            var part = "(" + string.Join(" * ", x.Dims.Skip(axis)) + ")";
            w.Line($"Kernels.ArenaKernels.ConcatPart<{y.ClrType}>({x.Span}, {outer}, {part}, {y.Span}, {block}, {offset});");
            offset = offset == "0" ? part : offset + " + " + part;
        }
    }
}
