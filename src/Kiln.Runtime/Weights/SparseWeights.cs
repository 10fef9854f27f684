using System.Numerics;

namespace Kiln.Runtime.Weights;

/// <summary>
/// The shape of a sparse weight matrix stored as bitmask panels: <see cref="Rows"/> outputs of
/// <see cref="Columns"/> inputs, cut into panels of <see cref="Panel"/> = 32 consecutive outputs (the dense GEMM's
/// packed-panel unit; the last panel is padded with absent outputs).
/// <para>
/// For each panel and each input k, one u32 mask says which of the panel's 32 weights at k are non-zero (bit j:
/// output 32·panel + j), and the non-zero values follow each other in that order (k ascending, then j ascending):
/// masks <c>[Panels, Columns]</c>, values <c>[non-zeros + 16]</c> (16 zeros after the last, so a kernel may load a
/// whole vector at any value), and <c>panel_starts [Panels + 1]</c>, where panel p's values begin (i32). AVX-512
/// expands 16 packed values under 16 mask bits into a vector in one instruction, so a matrix-vector product reads
/// 4 bytes per kept weight plus 1 bit per weight: 2.125 bytes per weight at 50 % sparsity against dense f32's 4.
/// The format does not depend on where the zeros are: unstructured, 2:4 and 4:8 masks are stored alike (for 2:4 the
/// mask is exactly as compact as two 2-bit indices per group of 4; for 4:8 it is smaller than four 3-bit indices
/// per group of 8), and every row of a panel costs the same bits.
/// </para>
/// <para>
/// With <see cref="Bits"/> = 8 the values are the signed int8 codes of a symmetric quantized matrix (w = scale · code;
/// <c>quantize{bits=8}</c>'s codes less their zero, 128) instead of f32, one byte each, and <c>scales</c> f32
/// <c>[Panels, Groups, 32]</c> holds each output's scale per group of <see cref="Group"/> inputs (a group of 32
/// outputs' scales is one vector): 0.5 + 0.125 + 4 / group bytes per weight at 50 % sparsity, against dense int8's
/// 1 + 2 / group. Panel starts then count bytes.
/// </para>
/// </summary>
public readonly record struct SparseLayout(int Rows, int Columns, int Bits, int Group)
{
    public const int Panel = 32;

    /// <summary>The layout of f32 values.</summary>
    public static SparseLayout Create(int rows, int columns) => Create(rows, columns, 32, columns);

    /// <summary>f32 values (<paramref name="bits"/> 32) or int8 codes with a scale per output and group of inputs (8; a group of 0 or beyond the row is one per output).</summary>
    public static SparseLayout Create(int rows, int columns, int bits, int group)
    {
        if (rows <= 0 || columns <= 0) throw new KernelException($"a sparse matrix needs rows and columns, got {rows}×{columns}");
        if (bits is not (32 or 8)) throw new KernelException($"sparse values are f32 (32 bits) or int8 codes (8 bits), not {bits} bits");
        if (group <= 0 || group >= columns || bits == 32) group = columns;
        return new SparseLayout(rows, columns, bits, group);
    }

    public int Groups => (Columns + Group - 1) / Group;

    /// <summary>Scales, [Panels, Groups, 32] (int8 codes only).</summary>
    public long ScaleCount => Bits == 8 ? (long)Panels * Groups * Panel : 0;

    public int ValueBytes => Bits / 8;

    /// <summary>A readable name: <c>f32</c>, <c>int8 g32</c>.</summary>
    public string Name => Bits == 32 ? "f32" : $"int8 {(Group >= Columns ? "per-channel" : "g" + Group)}";

    /// <summary>Zeros stored after the last value: a vector load of 16 values never leaves the tensor.</summary>
    public const int Padding = 16;

    public int Panels => (Rows + Panel - 1) / Panel;

    public long MaskCount => (long)Panels * Columns;

    /// <summary>Bytes of masks, values, panel starts and scales for <paramref name="nonZeros"/> kept weights.</summary>
    public long TotalBytes(long nonZeros) => MaskCount * 4 + (nonZeros + Padding) * ValueBytes + (Panels + 1L) * 4 + ScaleCount * 4;

    /// <summary>Stored bits per weight for <paramref name="nonZeros"/> kept weights.</summary>
    public double BitsPerWeight(long nonZeros) => TotalBytes(nonZeros) * 8.0 / ((long)Rows * Columns);

    /// <summary>The blob's format tag for the masks.</summary>
    public WeightFormat Format => WeightFormat.SparsePanels;
}

/// <summary>A sparse matrix in bitmask panels (<see cref="SparseLayout"/>).</summary>
public sealed record SparseMatrix(SparseLayout Layout, uint[] Masks, float[] Values, int[] PanelStarts)
{
    public long NonZeros => Values.Length - SparseLayout.Padding;

    /// <summary>The dense matrix, [Rows, Columns] (row = output).</summary>
    public float[] Densify() => SparseWeights.Densify(Layout, Masks, Values, PanelStarts);
}

/// <summary>A sparse matrix of int8 codes in bitmask panels (<see cref="SparseLayout"/> with 8 bits): w = scale · code.</summary>
public sealed record SparseCodeMatrix(SparseLayout Layout, uint[] Masks, sbyte[] Codes, int[] PanelStarts, float[] Scales)
{
    public long NonZeros => Codes.Length - SparseLayout.Padding;

    /// <summary>The dense matrix the codes stand for, [Rows, Columns] (row = output).</summary>
    public float[] Densify() => SparseWeights.Densify(Layout, Masks, Codes, PanelStarts, Scales);
}

/// <summary>Packing and unpacking of bitmask-panel sparse matrices (the one registry's sparse format).</summary>
public static class SparseWeights
{
    /// <summary>Packs W stored [rows, columns] (row = output); exact zeros (of either sign) are left out.</summary>
    public static SparseMatrix Pack(ReadOnlySpan<float> w, SparseLayout l)
    {
        if (w.Length != (long)l.Rows * l.Columns || l.Bits != 32) throw new KernelException($"sparse f32 packing of {l.Name} {l.Rows}×{l.Columns} got {w.Length} values");
        var masks = new uint[l.MaskCount];
        var starts = new int[l.Panels + 1];
        long nonZeros = 0;
        foreach (var v in w) if (v != 0) nonZeros++;
        if (nonZeros > int.MaxValue - SparseLayout.Padding) throw new KernelException($"a sparse matrix holds at most {int.MaxValue} non-zeros, not {nonZeros}");
        var values = new float[nonZeros + SparseLayout.Padding];
        var next = 0;
        for (var p = 0; p < l.Panels; p++)
        {
            starts[p] = next;
            var r0 = p * SparseLayout.Panel;
            var width = Math.Min(SparseLayout.Panel, l.Rows - r0);
            for (var k = 0; k < l.Columns; k++)
            {
                var mask = 0u;
                for (var j = 0; j < width; j++)
                {
                    var v = w[(r0 + j) * l.Columns + k];
                    if (v == 0) continue;
                    mask |= 1u << j;
                    values[next++] = v;
                }
                masks[(long)p * l.Columns + k] = mask;
            }
        }
        starts[l.Panels] = next;
        return new SparseMatrix(l, masks, values, starts);
    }

    /// <summary>
    /// Packs the codes of a symmetric quantized matrix (8 or 4 bits): a code equal to the zero point (128 or 8: weight
    /// 0) is left out, the others are stored less it, as int8; each output's group scales go into the panel's scale vectors.
    /// </summary>
    public static SparseCodeMatrix PackCodes(QuantizedMatrix q)
    {
        var ql = q.Layout;
        if (!ql.Symmetric) throw new KernelException($"sparse int8 codes come from symmetric quantized matrices, not {ql.Name}");
        var l = SparseLayout.Create(ql.Rows, ql.Columns, 8, ql.Group);
        var zero = ql.SymmetricZero;
        long nonZeros = 0;
        for (var r = 0; r < ql.Rows; r++)
            for (var k = 0; k < ql.Columns; k++)
                if (q.Code(r, k) != zero) nonZeros++;
        if (nonZeros > int.MaxValue - SparseLayout.Padding) throw new KernelException($"a sparse matrix holds at most {int.MaxValue} non-zeros, not {nonZeros}");
        var masks = new uint[l.MaskCount];
        var starts = new int[l.Panels + 1];
        var codes = new sbyte[nonZeros + SparseLayout.Padding];
        var scales = new float[l.ScaleCount];
        var next = 0;
        for (var p = 0; p < l.Panels; p++)
        {
            starts[p] = next;
            var r0 = p * SparseLayout.Panel;
            var width = Math.Min(SparseLayout.Panel, l.Rows - r0);
            for (var g = 0; g < l.Groups; g++)
                for (var j = 0; j < width; j++) scales[((long)p * l.Groups + g) * SparseLayout.Panel + j] = q.Scale(r0 + j, g);
            for (var k = 0; k < l.Columns; k++)
            {
                var mask = 0u;
                for (var j = 0; j < width; j++)
                {
                    var c = q.Code(r0 + j, k) - zero;
                    if (c == 0) continue;
                    mask |= 1u << j;
                    codes[next++] = (sbyte)c;
                }
                masks[(long)p * l.Columns + k] = mask;
            }
        }
        starts[l.Panels] = next;
        return new SparseCodeMatrix(l, masks, codes, starts, scales);
    }

    /// <summary>W as floats [rows, columns] from int8 codes in bitmask panels and their scales.</summary>
    public static float[] Densify(SparseLayout l, ReadOnlySpan<uint> masks, ReadOnlySpan<sbyte> codes, ReadOnlySpan<int> starts, ReadOnlySpan<float> scales)
    {
        Check(l, masks, codes.Length, starts, scales.Length);
        var w = new float[(long)l.Rows * l.Columns];
        for (var p = 0; p < l.Panels; p++)
        {
            var next = starts[p];
            for (var k = 0; k < l.Columns; k++)
            {
                var g = k / l.Group;
                var mask = masks[p * l.Columns + k];
                while (mask != 0)
                {
                    var j = BitOperations.TrailingZeroCount(mask);
                    mask &= mask - 1;
                    w[(p * SparseLayout.Panel + j) * l.Columns + k] = scales[(p * l.Groups + g) * SparseLayout.Panel + j] * codes[next++];
                }
            }
        }
        return w;
    }

    /// <summary>W as floats [rows, columns] from its masks, values and panel starts (checked against each other).</summary>
    public static float[] Densify(SparseLayout l, ReadOnlySpan<uint> masks, ReadOnlySpan<float> values, ReadOnlySpan<int> starts)
    {
        Check(l, masks, values.Length, starts, 0);
        var w = new float[(long)l.Rows * l.Columns];
        for (var p = 0; p < l.Panels; p++)
        {
            var next = starts[p];
            for (var k = 0; k < l.Columns; k++)
            {
                var mask = masks[p * l.Columns + k];
                while (mask != 0)
                {
                    var j = BitOperations.TrailingZeroCount(mask);
                    mask &= mask - 1;
                    w[(p * SparseLayout.Panel + j) * l.Columns + k] = values[next++];
                }
            }
        }
        return w;
    }

    /// <summary>
    /// Whether masks, values and panel starts agree (sizes, no bit past the last output, each panel's start the
    /// previous one's plus its bits): the kernels trust these, so a corrupted matrix is refused before any read.
    /// </summary>
    public static void Check(SparseLayout l, ReadOnlySpan<uint> masks, long valueCount, ReadOnlySpan<int> starts, long scaleCount)
    {
        if (masks.Length != l.MaskCount || starts.Length != l.Panels + 1 || scaleCount != l.ScaleCount)
            throw new KernelException($"a sparse {l.Name} {l.Rows}×{l.Columns} matrix needs {l.MaskCount} masks, {l.Panels + 1} panel starts and {l.ScaleCount} scales; got {masks.Length}, {starts.Length} and {scaleCount}");
        var lastWidth = l.Rows - (l.Panels - 1) * SparseLayout.Panel;
        var beyond = lastWidth == 32 ? 0u : ~0u << lastWidth;
        long next = 0;
        for (var p = 0; p < l.Panels; p++)
        {
            if (starts[p] != next) throw new KernelException($"sparse matrix panel {p} starts at value {starts[p]}, but the masks before it hold {next}");
            for (var k = 0; k < l.Columns; k++)
            {
                var mask = masks[p * l.Columns + k];
                if (p == l.Panels - 1 && (mask & beyond) != 0) throw new KernelException($"sparse matrix mask of panel {p}, input {k} marks outputs past the last ({l.Rows})");
                next += BitOperations.PopCount(mask);
            }
        }
        if (starts[l.Panels] != next || valueCount != next + SparseLayout.Padding)
            throw new KernelException($"a sparse matrix's masks hold {next} non-zeros (+ {SparseLayout.Padding} padding), but it has {valueCount} values (last panel start {starts[l.Panels]})");
    }
}
