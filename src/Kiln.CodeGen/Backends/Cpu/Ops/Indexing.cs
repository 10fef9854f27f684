using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the indexing family (Ir/Ops/IndexingOps): Gather along any axis (rows of axis 0: embeddings).</summary>
internal static class IndexingKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Gather"] = new(
            c => c.In(0)!.Rank >= 1 && c.In(1)!.Elem == DType.I64 && c.In(0)!.ClrType != "" ? null : "i64 indices",
            c =>
            {
                var x = c.In(0)!;
                var axis = (int)c.Node.AttrInt("axis");
                if (axis < 0) axis += x.Rank;
                string Product(IEnumerable<string> dims) => dims.Any() ? "(" + string.Join(" * ", dims) + ")" : "1";
                if (axis == 0)
                    c.Body.Line($"Kernels.ArenaKernels.GatherRows<{x.ClrType}>({x.Span}, {x.Dims[0]}, {Product(x.Dims.Skip(1))}, {c.In(1)!.Span}, {c.Out(0)!.Span});");
                else
                    c.Body.Line($"Kernels.ArenaKernels.GatherAxis<{x.ClrType}>({x.Span}, outer: {Product(x.Dims.Take(axis))}, axis: {x.Dims[axis]}, inner: {Product(x.Dims.Skip(axis + 1))}, {c.In(1)!.Span}, {c.Out(0)!.Span});");
            });
    }
}
