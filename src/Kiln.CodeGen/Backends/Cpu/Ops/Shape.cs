using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the shape family (Ir/Ops/ShapeOps): Range, Transpose, Concat (a KV-cache append included).</summary>
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
