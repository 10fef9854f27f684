namespace Kiln.Runtime.Weights;

/// <summary>
/// The shape of a quantized weight matrix: <see cref="Rows"/> output channels of <see cref="Columns"/> inputs each
/// (the matrix is stored as Wᵀ, one row per output, so a row's codes are contiguous along the reduction), quantized
/// in groups of <see cref="Group"/> consecutive inputs that share a scale (and, asymmetric, a zero point).
/// <para>
/// A weight w is <c>scale · (code − zero)</c>. Codes are unsigned: 0..255 for 8 bits, 0..15 for 4 bits. Symmetric
/// formats have no stored zero points: the zero is 128 (8 bits) or 8 (4 bits). Rows are padded to a whole number of
/// 32-code blocks (the kernels' unit); padding codes equal the zero and never contribute.
/// </para>
/// <para>
/// Layout of one row's codes: 8 bits, one byte per code; 4 bits, 16 bytes per block of 32 codes, byte j holding code
/// j in its low nibble and code j + 16 in its high nibble (one shift and mask unpack a block into 32 bytes).
/// Scales are f16, <c>[Rows, Groups]</c>; zero points u8 <c>[Rows, Groups]</c>. A group larger than a row is one group
/// per row (per-channel). A group must otherwise be a multiple of 32; when it does not divide the row, the last
/// group of each row is partial (shorter), and its scale covers only the columns it has.
/// </para>
/// </summary>
public readonly record struct QuantizedLayout(int Bits, int Rows, int Columns, int Group, bool Symmetric)
{
    public const int Block = 32;

    public static QuantizedLayout Create(int bits, int rows, int columns, int group, bool symmetric)
    {
        if (bits is not (4 or 8)) throw new KernelException($"quantized weights have 4 or 8 bits, not {bits}");
        if (rows <= 0 || columns <= 0) throw new KernelException($"a quantized matrix needs rows and columns, got {rows}×{columns}");
        if (group <= 0 || group >= columns) group = columns;
        else if (group % Block != 0) throw new KernelException($"a quantization group of {group} is not a multiple of {Block} (use 32, 64, 128, … or 0 for one group per row)");
        return new QuantizedLayout(bits, rows, columns, group, symmetric);
    }

    /// <summary>Columns rounded up to whole 32-code blocks.</summary>
    public int PaddedColumns => (Columns + Block - 1) / Block * Block;

    public int Blocks => PaddedColumns / Block;

    public int Groups => (Columns + Group - 1) / Group;

    /// <summary>Whether the last group of a row is shorter than the others.</summary>
    public bool HasPartialGroup => Columns % Group != 0;

    public int RowBytes => PaddedColumns * Bits / 8;

    public long CodeBytes => (long)Rows * RowBytes;

    public int MaxCode => (1 << Bits) - 1;

    /// <summary>The zero point of symmetric formats.</summary>
    public int SymmetricZero => 1 << (Bits - 1);

    /// <summary>Bytes of codes, scales and zero points together.</summary>
    public long TotalBytes => CodeBytes + (long)Rows * Groups * 2 + (Symmetric ? 0 : (long)Rows * Groups);

    /// <summary>Stored bits per weight, scales and zero points included.</summary>
    public double BitsPerWeight => TotalBytes * 8.0 / ((long)Rows * Columns);

    /// <summary>The group that column <paramref name="k"/> belongs to.</summary>
    public int GroupOf(int k) => k / Group;

    /// <summary>A readable name: <c>int4 g32 sym</c>, <c>int8 per-channel</c>.</summary>
    public string Name => $"int{Bits} {(Group >= Columns ? "per-channel" : "g" + Group)}{(Symmetric ? "" : " asym")}";

    /// <summary>The blob's format tag for the codes.</summary>
    public WeightFormat Format => Bits == 8 ? WeightFormat.Int8Rows : WeightFormat.Int4Blocks;
}

/// <summary>A quantized matrix: its layout, codes, f16 scales and (asymmetric) zero points.</summary>
public sealed record QuantizedMatrix(QuantizedLayout Layout, byte[] Codes, Half[] Scales, byte[]? Zeros)
{
    public int Zero(int row, int group) => Zeros is null ? Layout.SymmetricZero : Zeros[row * Layout.Groups + group];

    public float Scale(int row, int group) => (float)Scales[row * Layout.Groups + group];

    public int Code(int row, int k) => QuantizedWeights.Code(Codes, Layout, row, k);

    /// <summary>The float matrix the codes stand for, [Rows, Columns].</summary>
    public float[] Dequantize() => QuantizedWeights.Dequantize(Layout, Codes, Scales, Zeros);
}

/// <summary>
/// The quantized weight formats (one registry: the packer, the unpacker and the kernels of every format read the
/// layout from <see cref="QuantizedLayout"/>): round-to-nearest packing, packing with given scales (GPTQ and AWQ
/// choose their own), and dequantization for the evaluator's checks and ONNX export.
/// </summary>
public static class QuantizedWeights
{
    /// <summary>Code of column k of a row.</summary>
    public static int Code(ReadOnlySpan<byte> codes, QuantizedLayout l, int row, int k)
    {
        var rowStart = (long)row * l.RowBytes;
        if (l.Bits == 8) return codes[(int)(rowStart + k)];
        var block = k / QuantizedLayout.Block;
        var j = k % QuantizedLayout.Block;
        var b = codes[(int)(rowStart + block * 16 + (j & 15))];
        return j < 16 ? b & 15 : b >> 4;
    }

    private static void SetCode(Span<byte> codes, QuantizedLayout l, int row, int k, int code)
    {
        var rowStart = (long)row * l.RowBytes;
        if (l.Bits == 8) { codes[(int)(rowStart + k)] = (byte)code; return; }
        var block = k / QuantizedLayout.Block;
        var j = k % QuantizedLayout.Block;
        ref var b = ref codes[(int)(rowStart + block * 16 + (j & 15))];
        b = j < 16 ? (byte)((b & 0xF0) | code) : (byte)((b & 0x0F) | (code << 4));
    }

    /// <summary>
    /// Round-to-nearest scales and zeros of one group: symmetric maps the largest magnitude to the largest code
    /// distance (±127, or −8..7 for 4 bits with the scale of 7 steps up); asymmetric spans [min, max] with 0 inside.
    /// </summary>
    public static (float Scale, int Zero) RoundToNearestParameters(ReadOnlySpan<float> group, QuantizedLayout l)
    {
        if (l.Symmetric)
        {
            var amax = 0f;
            foreach (var v in group) amax = MathF.Max(amax, MathF.Abs(v));
            var steps = l.SymmetricZero - 1;
            return (amax == 0 ? 1f : amax / steps, l.SymmetricZero);
        }
        float min = 0, max = 0;
        foreach (var v in group) { min = MathF.Min(min, v); max = MathF.Max(max, v); }
        if (max == min) return (1f, 0);
        var scale = (max - min) / l.MaxCode;
        var zero = (int)Math.Clamp(MathF.Round(-min / scale), 0, l.MaxCode);
        return (scale, zero);
    }

    /// <summary>The code nearest to w for a group's (f16-rounded) scale and zero.</summary>
    public static int Quantize(float w, float scale, int zero, int maxCode) =>
        (int)Math.Clamp(MathF.Round(w / scale) + zero, 0, maxCode);

    /// <summary>Packs W stored [rows, columns] (row = output channel) by round-to-nearest.</summary>
    public static QuantizedMatrix Pack(ReadOnlySpan<float> w, QuantizedLayout l)
    {
        var scales = new Half[l.Rows * l.Groups];
        var zeros = l.Symmetric ? null : new byte[l.Rows * l.Groups];
        for (var r = 0; r < l.Rows; r++)
            for (var g = 0; g < l.Groups; g++)
            {
                var k0 = g * l.Group;
                var (scale, zero) = RoundToNearestParameters(w.Slice(r * l.Columns + k0, Math.Min(l.Group, l.Columns - k0)), l);
                scales[r * l.Groups + g] = (Half)scale;
                if (zeros is not null) zeros[r * l.Groups + g] = (byte)zero;
            }
        return PackWith(w, l, scales, zeros);
    }

    /// <summary>Packs W with the given scales and zero points (codes are the nearest under the f16 scale).</summary>
    public static QuantizedMatrix PackWith(ReadOnlySpan<float> w, QuantizedLayout l, Half[] scales, byte[]? zeros)
    {
        if (w.Length != (long)l.Rows * l.Columns) throw new KernelException($"{l.Name} packing of {l.Rows}×{l.Columns} got {w.Length} values");
        var codes = new byte[l.CodeBytes];
        for (var r = 0; r < l.Rows; r++)
        {
            for (var k = 0; k < l.PaddedColumns; k++)
            {
                var g = Math.Min(l.GroupOf(k), l.Groups - 1);
                var zero = zeros is null ? l.SymmetricZero : zeros[r * l.Groups + g];
                var code = k < l.Columns ? Quantize(w[r * l.Columns + k], FiniteScale(scales[r * l.Groups + g]), zero, l.MaxCode) : zero;
                SetCode(codes, l, r, k, code);
            }
        }
        return new QuantizedMatrix(l, codes, scales, zeros);
    }

    /// <summary>A scale as the kernels see it; a zero or non-finite one (a group of zeros) divides as 1.</summary>
    public static float FiniteScale(Half h)
    {
        var s = (float)h;
        return s == 0 || !float.IsFinite(s) ? 1f : s;
    }

    /// <summary>W as floats [rows, columns]: scale · (code − zero).</summary>
    public static float[] Dequantize(QuantizedLayout l, ReadOnlySpan<byte> codes, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros)
    {
        var w = new float[(long)l.Rows * l.Columns];
        for (var r = 0; r < l.Rows; r++) DequantizeRow(l, codes, scales, zeros, r, w.AsSpan(r * l.Columns, l.Columns));
        return w;
    }

    /// <summary>One row of W as floats (an embedding lookup reads rows this way).</summary>
    public static void DequantizeRow(QuantizedLayout l, ReadOnlySpan<byte> codes, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros, int row, Span<float> y)
    {
        for (var g = 0; g < l.Groups; g++)
        {
            var scale = (float)scales[row * l.Groups + g];
            var zero = zeros.IsEmpty ? l.SymmetricZero : zeros[row * l.Groups + g];
            var k1 = Math.Min(l.Columns, (g + 1) * l.Group);
            for (var k = g * l.Group; k < k1; k++) y[k] = scale * (Code(codes, l, row, k) - zero);
        }
    }
}
