using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen.Backends.Cpu.Ops;

/// <summary>Planned CPU kernels of the compressed ops (Ir/Ops/CompressedOps): quantized and sparse products, quantized embedding lookups.</summary>
internal static class CompressedKernels
{
    public static void Register(IDictionary<string, PlannedKernel> d)
    {
        d[KilnOp.Qualified.QuantizedMatMul] = new(
            c =>
            {
                var (x, y) = (c.In(0)!, c.Out(0)!);
                return x.Elem == DType.F32 && x.Rank >= 1 && new[] { 1, 2, 3, 5 }.All(i => c.In(i) is null or { Storage: PlannedStorage.Constant })
                    && BiasFits(c.In(4), y) ? null : "f32 activations, constant codes, C the product's shape or one row";
            },
            EmitProduct) { LastRowsOnly = c => c.In(4) is null && c.Node.AttrString("activation").Length == 0 };
        d[KilnOp.Qualified.QuantizedGather] = new(
            c => c.In(3)!.Elem == DType.I64 && c.In(0) is { Storage: PlannedStorage.Constant } ? null : "i64 indices into a constant table",
            c =>
            {
                var x = c.In(0)!;
                var layout = Layout(c.Node, x, c.In(2) is null);
                c.Body.Line($"Kernels.QuantizedOps.GatherRows({layout}, {x.Span}, {c.In(1)!.Span}, {c.In(2)?.Span ?? "default"}, {c.In(3)!.Span}, {c.Out(0)!.Span});");
            });
        d[KilnOp.Qualified.SparseMatMul] = new(
            c =>
            {
                var (x, y) = (c.In(0)!, c.Out(0)!);
                if (!(x.Elem == DType.F32 && x.Rank >= 1 && new[] { 1, 2, 3 }.All(i => c.In(i) is { Storage: PlannedStorage.Constant }) && c.In(5) is null or { Storage: PlannedStorage.Constant }
                    && BiasFits(c.In(4), y)))
                    return "f32 activations, constant masks, values and panel starts, C the product's shape or one row";
                return SparseMatrixProblem(c.Node);
            },
            EmitSparseProduct) { LastRowsOnly = c => c.In(4) is null && c.Node.AttrString("activation").Length == 0 };
    }

    /// <summary>
    /// Why the node's sparse matrix cannot be trusted, or null: the planned kernel reads masks, values and panel
    /// starts without checking them on every call, so they are checked here, once, while they are constants.
    /// </summary>
    private static string? SparseMatrixProblem(Node n)
    {
        var scales = n.Inputs.Count > 5 ? n.Inputs[5]?.Data : null;
        if (n.Inputs[1]?.Data is not { Elem: DType.U32, Dims.Length: 2 } masks || n.Inputs[2]?.Data is not { Elem: DType.F32 or DType.I8 } values
            || n.Inputs[3]?.Data is not { Elem: DType.I32 } starts || n.Attr<IntAttr>("rows") is not { Value: > 0 and <= int.MaxValue } rows
            || (values.Elem == DType.I8) != (scales is { Elem: DType.F32 }))
            return "u32 masks [panels, columns], f32 values (or i8 codes with f32 scales), i32 panel starts and a rows attribute";
        try
        {
            Kiln.Runtime.Weights.SparseWeights.Check(Kiln.Runtime.Weights.SparseLayout.Create((int)rows.Value, (int)masks.Dims[1], values.Elem == DType.I8 ? 8 : 32, (int)n.AttrInt("group")),
                System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(masks.Bytes), values.ElementCount,
                System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(starts.Bytes), scales?.ElementCount ?? 0);
            return null;
        }
        catch (Kiln.Runtime.KernelException e)
        {
            return e.Message;
        }
    }

    private static void EmitSparseProduct(PlannedNodeContext c)
    {
        var (n, x, y) = (c.Node, c.In(0)!, c.Out(0)!);
        var cols = c.In(1)!.Dims[1];
        var int8 = c.In(5) is not null;
        var layout = $"Kiln.Runtime.Weights.SparseLayout.Create({n.Attr<IntAttr>("rows")!.Value}, {cols}, {(int8 ? 8 : 32)}, {n.AttrInt("group")})";
        var (masks, starts) = (c.In(1)!.Span, c.In(3)!.Span);
        // int8 codes are followed by their scales in both kernels' argument lists.
        var values = int8 ? $"{c.In(2)!.Span}, {starts}, {c.In(5)!.Span}" : $"{c.In(2)!.Span}, {starts}";
        EmitRowsOrLast(c, cols,
            (row, rowY) => $"Kernels.SparseMatMul.Multiply({row}, 1, {layout}, {masks}, {values}, {rowY}, false)",
            $"Kernels.ArenaKernels.SparseMatMul({x.Span}, {layout}, {masks}, {values}, {c.In(4)?.Span ?? "default"}, {y.Span}, {CSharp.String(n.AttrString("activation"))})");
    }

    private static void EmitProduct(PlannedNodeContext c)
    {
        var (n, x, y) = (c.Node, c.In(0)!, c.Out(0)!);
        var layout = Layout(n, c.In(1)!, c.In(3) is null);
        var zeros = c.In(3)?.Span ?? "default";
        var act = n.AttrString("activation");
        var cols = n.Attr<IntAttr>("columns")!.Value;
        EmitRowsOrLast(c, cols,
            (row, rowY) => $"Kernels.QuantizedMatMul.Multiply({row}, 1, {layout}, {c.In(1)!.Span}, {c.In(2)!.Span}, {zeros}, {rowY}, false, {n.AttrInt("activation_bits")}, {c.In(5)?.Span ?? "default"})",
            $"Kernels.ArenaKernels.QuantizedMatMul({x.Span}, {layout}, {c.In(1)!.Span}, {c.In(2)!.Span}, {zeros}, {c.In(4)?.Span ?? "default"}, {y.Span}, {CSharp.String(act)}, {n.AttrInt("activation_bits")}, {c.In(5)?.Span ?? "default"})");
    }

    /// <summary>C the product's shape, or one row broadcast to every row (what the products' seeding copies), or none.</summary>
    private static bool BiasFits(PlannedOperand? bias, PlannedOperand y) =>
        bias is null || bias.Elem == DType.F32 && (bias.Dims.SequenceEqual(y.Dims) || bias.Rank == 1 && bias.Dims[0] == y.Dims[^1]);

    /// <summary>
    /// A product's call over all rows; in a decoding step that needs only each row's last position's logits, the
    /// one-row call (given that row of x and of y) for each batch row instead.
    /// </summary>
    private static void EmitRowsOrLast(PlannedNodeContext c, object columns, Func<string, string, string> oneRow, string allRows)
    {
        var (w, x, y) = (c.Body, c.In(0)!, c.Out(0)!);
        if (c.LastRowsOnly is not { } condition)
        {
            w.Line(allRows + ";");
            return;
        }
        w.Open($"if ({condition})");
        w.Line($"for (var row = 0; row < batch; row++) {oneRow($"{x.Span}.Slice((row * seq + seq - 1) * {columns}, {columns})", $"{y.Span}.Slice(row * {y.Dims[^1]}, {y.Dims[^1]})")};");
        w.Close();
        w.Open("else");
        w.Line(allRows + ";");
        w.Close();
    }

    /// <summary>The layout of a quantized matrix as a C# expression (a struct: nothing is allocated per call).</summary>
    private static string Layout(Node n, PlannedOperand codes, bool symmetric) =>
        $"Kiln.Runtime.Weights.QuantizedLayout.Create({n.Attr<IntAttr>("bits")!.Value}, {codes.Dims[0]}, {n.Attr<IntAttr>("columns")!.Value}, {n.Attr<IntAttr>("group")!.Value}, {(symmetric ? "true" : "false")})";
}
