using Kiln.Runtime.Operators;
using Kiln.Runtime.Weights;

namespace Kiln.Runtime.Kernels;

/// <summary>The tensor-level form of the kiln:SparseMatMul op (what the evaluator runs).</summary>
public static class SparseOps
{
    /// <summary>
    /// A sparse matrix from an op's inputs (masks, values, panel starts from <paramref name="first"/> on; int8 values
    /// take their scales from input <paramref name="first"/> + 4) and its <c>rows</c> and <c>group</c> attributes, checked.
    /// </summary>
    public static (SparseLayout Layout, Tensor Masks, Tensor Values, Tensor Starts, Tensor? Scales) Matrix(OpContext c, int first)
    {
        var masks = c.In(first);
        var values = c.In(first + 1);
        var starts = c.In(first + 2);
        var scales = c.Opt(first + 4);
        if (masks.Type != DType.U32 || masks.Rank != 2 || values.Type is not (DType.F32 or DType.I8) || values.Rank != 1 || starts.Type != DType.I32 || starts.Rank != 1
            || (values.Type == DType.I8) != (scales is { Type: DType.F32 }))
            throw new KernelException($"a sparse matrix is u32 masks [panels, columns], f32 values [non-zeros + {SparseLayout.Padding}] (or i8 codes and f32 scales [panels, groups, 32]) and i32 panel starts [panels + 1]; got {masks}, {values}, {starts}{(scales is null ? "" : ", " + scales)}");
        var layout = SparseLayout.Create((int)c.Int("rows"), masks.Shape[1], values.Type == DType.I8 ? 8 : 32, (int)c.Int("group"));
        SparseWeights.Check(layout, masks.Span<uint>(), values.Length, starts.Span<int>(), scales?.Length ?? 0);
        return (layout, masks, values, starts, scales);
    }

    /// <summary>A·Wᵀ (+ C broadcast to the product), then the activation.</summary>
    public static Tensor MatMul(Tensor a, (SparseLayout Layout, Tensor Masks, Tensor Values, Tensor Starts, Tensor? Scales) w, Tensor? c, string activation)
    {
        var l = w.Layout;
        if (a.Type != DType.F32 || a.Rank < 1 || a.Shape[^1] != l.Columns) throw new KernelException($"SparseMatMul takes f32 [..., {l.Columns}], got {a}");
        var m = (int)(a.Length / l.Columns);
        var (r, accumulate) = QuantizedOps.Product(a, l.Rows, c, KilnOp.SparseMatMul);
        if (w.Scales is { } scales)
            SparseMatMul.Multiply(a.Span<float>(), m, l, w.Masks.Span<uint>(), w.Values.Span<sbyte>(), w.Starts.Span<int>(), scales.Span<float>(), r.Span<float>(), accumulate);
        else
            SparseMatMul.Multiply(a.Span<float>(), m, l, w.Masks.Span<uint>(), w.Values.Span<float>(), w.Starts.Span<int>(), r.Span<float>(), accumulate);
        Fused.Activate(r.Span<float>(), activation);
        return r;
    }
}
