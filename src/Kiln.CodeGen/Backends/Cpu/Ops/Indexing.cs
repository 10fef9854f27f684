using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the indexing family (Ir/Ops/IndexingOps): Gather of rows along axis 0.</summary>
internal static class IndexingKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d["Gather"] = new(
            c => c.Node.AttrInt("axis") == 0 && c.In(0)!.Rank >= 1 && c.In(1)!.Elem == DType.I64 && c.In(0)!.ClrType != "" ? null : "axis 0 with i64 indices",
            c =>
            {
                var x = c.In(0)!;
                var rowLength = x.Rank == 1 ? "1" : "(" + string.Join(" * ", x.Dims.Skip(1)) + ")";
                c.Body.Line($"Kernels.ArenaKernels.GatherRows<{x.ClrType}>({x.Span}, {x.Dims[0]}, {rowLength}, {c.In(1)!.Span}, {c.Out(0)!.Span});");
            });
    }
}
