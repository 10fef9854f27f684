using Kiln.Ir.Inference;
using Kiln.Runtime.Operators;

namespace Kiln.Ir.Ops;

/// <summary>
/// Kiln's ops over compressed weights (domain <c>kiln</c>), produced by the compression passes. A quantized matrix is
/// three constants: <c>codes</c> (u8 [rows, bytes per row]: the weight matrix stored transposed, one row per output
/// channel, 8-bit codes or two 4-bit codes per byte), <c>scales</c> (f16 [rows, groups]) and, for asymmetric formats,
/// <c>zero_points</c> (u8 [rows, groups]); the attributes <c>bits</c>, <c>group</c> and <c>columns</c> complete the
/// layout (Kiln.Runtime.Weights.QuantizedLayout documents it). A sparse matrix in bitmask panels is three constants:
/// <c>masks</c> (u32 [panels, columns]), <c>values</c> (f32, the non-zeros and 16 padding zeros) and
/// <c>panel_starts</c> (i32 [panels + 1]), with the attribute <c>rows</c>; or, from int8 quantized weights, i8 codes as
/// values with <c>scales</c> (f32 [panels, groups, 32]) and the attribute <c>group</c> (Kiln.Runtime.Weights.SparseLayout).
/// </summary>
internal static class CompressedOps
{
    public const string Domain = KilnOp.Domain;

    private const string LayoutAttrs = "bits:int!, group:int!, columns:int!";

    public static void Register(OpRegistry r)
    {
        // Y = A·Wᵀ (+ C), then an optional activation, with W quantized; A [..., columns] → Y [..., rows].
        // activation_bits: 0 lets the kernel choose how A is quantized on the fly; 8 asks int8 (W8A8, quantize-activations).
        // activation_scales (quantize-activations{mode=static}): f32 [blocks], one fixed int8 scale per 32-block of A's rows.
        r.Add(KilnOp.QuantizedMatMul, "A, codes, scales, zero_points?, C?, activation_scales?", "Y", LayoutAttrs + ", activation:string=, activation_bits:int=0", c =>
        {
            var a = c.ShapeOf(0);
            var codes = c.ShapeOf(1);
            if (a is null || codes is null || a.Rank < 1 || codes.Rank != 2) { c.Set(0, c.Elem(0), (Shape?)null); return; }
            var product = new Shape(a.Dims.Take(a.Rank - 1).Append(codes[0]));
            c.Set(0, c.Elem(0), c.HasInput(4) ? Rules.Broadcast(c, product, c.ShapeOf(4)) : product);
        }, domain: Domain).With(OpTraits.RowIndependent);
        // Rows of a quantized table (an embedding) as f32: Y [indices..., columns].
        r.Add(KilnOp.QuantizedGather, "codes, scales, zero_points?, indices", "Y", LayoutAttrs, c =>
        {
            var idx = c.ShapeOf(3);
            c.Set(0, DType.F32, idx is null ? null : new Shape(idx.Dims.Append(Dim.Const(c.Int("columns")))));
        }, domain: Domain);
        // Y = A·Wᵀ (+ C), then an optional activation, with W sparse (bitmask panels); A [..., columns] → Y [..., rows].
        // values: f32 non-zeros, or i8 codes with scales (f32 [panels, groups, 32]) per group of `group` inputs (0: one per output).
        r.Add(KilnOp.SparseMatMul, "A, masks, values, panel_starts, C?, scales?", "Y", "rows:int!, group:int=0, activation:string=", c =>
        {
            var a = c.ShapeOf(0);
            if (a is null || a.Rank < 1) { c.Set(0, c.Elem(0), (Shape?)null); return; }
            var product = new Shape(a.Dims.Take(a.Rank - 1).Append(Dim.Const(c.Int("rows"))));
            c.Set(0, c.Elem(0), c.HasInput(4) ? Rules.Broadcast(c, product, c.ShapeOf(4)) : product);
        }, domain: Domain).With(OpTraits.RowIndependent);
    }
}
