using Kiln.Runtime.Operators;
using Kiln.Runtime.Weights;

namespace Kiln.Runtime.Kernels;

/// <summary>The tensor-level forms of the kiln:QuantizedMatMul and kiln:QuantizedGather ops (what the evaluator runs).</summary>
public static class QuantizedOps
{
    /// <summary>A quantized matrix from an op's inputs (codes, scales, zero points from <paramref name="first"/> on) and layout attributes.</summary>
    public static (QuantizedLayout Layout, Tensor Codes, Tensor Scales, Tensor? Zeros) Matrix(OpContext c, int first)
    {
        var codes = c.In(first);
        var scales = c.In(first + 1);
        var zeros = c.Opt(first + 2);
        if (codes.Type != DType.U8 || codes.Rank != 2 || scales.Type != DType.F16 || zeros is { Type: not DType.U8 })
            throw new KernelException($"a quantized matrix is u8 codes [rows, bytes], f16 scales and u8 zero points; got {codes}, {scales}{(zeros is null ? "" : ", " + zeros)}");
        var layout = QuantizedLayout.Create((int)c.Int("bits"), codes.Shape[0], (int)c.Int("columns"), (int)c.Int("group"), zeros is null);
        if (codes.Shape[1] != layout.RowBytes || scales.Length != (long)layout.Rows * layout.Groups || zeros is not null && zeros.Length != scales.Length)
            throw new KernelException($"{layout.Name} of {layout.Rows}×{layout.Columns} needs codes [{layout.Rows}, {layout.RowBytes}] and {layout.Rows * layout.Groups} scales; got {codes}, {scales}");
        return (layout, codes, scales, zeros);
    }

    /// <summary>A·Wᵀ (+ C broadcast to the product), then the activation.</summary>
    public static Tensor MatMul(Tensor a, (QuantizedLayout Layout, Tensor Codes, Tensor Scales, Tensor? Zeros) w, Tensor? c, string activation, int activationBits = 0, Tensor? activationScales = null)
    {
        var l = w.Layout;
        if (a.Type != DType.F32 || a.Rank < 1 || a.Shape[^1] != l.Columns) throw new KernelException($"QuantizedMatMul takes f32 [..., {l.Columns}], got {a}");
        var m = (int)(a.Length / l.Columns);
        var (r, accumulate) = Product(a, l.Rows, c, KilnOp.QuantizedMatMul);
        QuantizedMatMul.Multiply(a.Span<float>(), m, l, w.Codes.Span<byte>(), w.Scales.Span<Half>(), w.Zeros is null ? default : w.Zeros.Span<byte>(), r.Span<float>(), accumulate, activationBits,
            activationScales is null ? default : activationScales.Span<float>());
        Fused.Activate(r.Span<float>(), activation);
        return r;
    }

    /// <summary>
    /// The output of a product with a compressed weight, A [..., k] → [..., rows]: C broadcast into it when given
    /// (the kernel then accumulates onto it), uninitialized otherwise.
    /// </summary>
    public static (Tensor Y, bool Accumulate) Product(Tensor a, int rows, Tensor? c, string op)
    {
        int[] product = [.. a.Shape[..^1], rows];
        var r = Tensor.Uninitialized(DType.F32, product);
        if (c is null) return (r, false);
        if (c.Type != DType.F32 || !Broadcast.Shape(product, c.Shape).AsSpan().SequenceEqual(product))
            throw new KernelException($"{op}: C {c} does not broadcast to the product {string.Join("×", product)}");
        (c.Shape.AsSpan().SequenceEqual(product) ? c : Movement.Expand(c, product)).Span<float>().CopyTo(r.Span<float>());
        return (r, true);
    }

    /// <summary>Rows of the quantized table for each index (negative indices count from the end, as Gather's do).</summary>
    public static Tensor Gather((QuantizedLayout Layout, Tensor Codes, Tensor Scales, Tensor? Zeros) w, Tensor indices)
    {
        var l = w.Layout;
        var r = Tensor.Uninitialized(DType.F32, [.. indices.Shape, l.Columns]);
        var idx = indices.Type == DType.I64 ? indices : Cast.To(indices, DType.I64);
        GatherRows(l, w.Codes.Span<byte>(), w.Scales.Span<Half>(), w.Zeros is null ? default : w.Zeros.Span<byte>(), idx.Span<long>(), r.Span<float>());
        return r;
    }

    /// <summary>y[i, :] = row indices[i] of the dequantized table (the kernel generated code calls).</summary>
    public static void GatherRows(QuantizedLayout l, ReadOnlySpan<byte> codes, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros, ReadOnlySpan<long> indices, Span<float> y)
    {
        for (var i = 0; i < indices.Length; i++)
        {
            var row = indices[i] < 0 ? indices[i] + l.Rows : indices[i];
            if (row < 0 || row >= l.Rows) throw new KernelException($"gather index {indices[i]} is outside [-{l.Rows}, {l.Rows})");
            QuantizedWeights.DequantizeRow(l, codes, scales, zeros, (int)row, y.Slice(i * l.Columns, l.Columns));
        }
    }
}
