using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kiln.Runtime.Weights;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// Many activation rows times symmetric 4-bit weights on a CPU with AVX-VNNI: an int8 GEMM. One <c>vpdpbusd</c> does
/// 32 multiply-adds where an f32 FMA of the same width does 8, so the dequantized f32 path
/// (<see cref="MultiplyDequantized"/>) cannot match it; the per-block float work (a conversion, a scale product and
/// an FMA per 8 rows) is paid once per 32 codes.
/// <para>
/// Layout: a lane of the i32 accumulators is one activation row. The rows are rounded per 32-block exactly as the
/// decode path rounds them (<see cref="QuantizeRow"/>) and arranged 8 rows at a time so that step s of block b holds,
/// for each of the 8 rows, its 4 codes b·32+4s … b·32+4s+3 (an 8×8 transpose of 4-byte units). A weight channel's 4
/// codes at that step are broadcast to every lane. The accumulator of a block starts at −8·Σcodes of the row, which
/// removes the symmetric zero point in the integer domain, as decode does; then y += float(dot) · (sx · sw).
/// </para>
/// </summary>
public static unsafe partial class QuantizedMatMul
{
    /// <summary>Whether products of <paramref name="m"/> rows with this layout run as the VNNI int8 GEMM.</summary>
    private static bool UsesVnniGemm(int m, QuantizedLayout l) =>
        m >= DequantizedGemmRows && l.Bits == 4 && l.Symmetric && AvxVnni.IsSupported && Avx2.IsSupported && UseIntegerDotProduct;

    // Rounded activation panels of the calling thread's product (workers read them).
    [ThreadStatic] private static byte[]? _vnniPanels;
    [ThreadStatic] private static float[]? _vnniRowScales;
    [ThreadStatic] private static int[]? _vnniStarts;
    // Per worker: 8 rows' codes before the transpose; 8 channels' codes unpacked to a byte each, and their scales per block.
    [ThreadStatic] private static sbyte[]? _vnniRowCodes;
    [ThreadStatic] private static byte[]? _vnniChannelCodes;
    [ThreadStatic] private static float[]? _vnniChannelScales;

    private struct VnniJob
    {
        public byte* Codes, Panels;
        public Half* Scales;
        public float* X, RowScales, Y;
        public int* Starts;
        public int M, N, K, Blocks, Groups, BlocksPerGroup, RowBytes, Zero, RowVectors;
        public bool Accumulate;
    }

    private static void MultiplyVnni(float* x, int m, QuantizedLayout l, byte* codes, Half* scales, float* y, bool accumulate)
    {
        var k = l.Columns;
        var blocks = l.Blocks;
        var rowVectors = (m + 7) / 8;
        // Per 8 rows and block: 256 code bytes, 8 scales, 8 accumulator starts.
        var panels = Grow(ref _vnniPanels, rowVectors * blocks * 256);
        var rowScales = Grow(ref _vnniRowScales, rowVectors * blocks * 8);
        var starts = Grow(ref _vnniStarts, rowVectors * blocks * 8);
        fixed (byte* pp = panels)
        fixed (float* ps = rowScales)
        fixed (int* pst = starts)
        {
            var job = new VnniJob
            {
                Codes = codes, Panels = pp, Scales = scales, X = x, RowScales = ps, Y = y, Starts = pst,
                M = m, N = l.Rows, K = k, Blocks = blocks, Groups = l.Groups, BlocksPerGroup = Math.Max(1, l.Group / Block),
                RowBytes = l.RowBytes, Zero = l.SymmetricZero, RowVectors = rowVectors, Accumulate = accumulate,
            };
            // Rounded again for each product, even one with the same input as the last: comparing x element by
            // element costs about as much as rounding it into int8 panels.
            WorkerTeam.For(rowVectors, Parallelism.Threads, &RoundIntoVnniPanel, &job);
            WorkerTeam.For((l.Rows + 7) / 8, Parallelism.Threads, &VnniTile, &job, chunk: 1);
        }
    }

    /// <summary>Rows 8·v … 8·v+7 of x rounded (rows past M are zero) and arranged as the kernel reads them.</summary>
    private static void RoundIntoVnniPanel(void* state, int v)
    {
        ref var j = ref *(VnniJob*)state;
        var ld = j.Blocks * Block;
        var codes = Grow(ref _vnniRowCodes, 8 * ld);
        var blockScales = Grow(ref _rowScales, j.Blocks);
        var lanes = Grow(ref _rowLanes, j.Blocks * 8);
        var scalesOut = j.RowScales + (long)v * j.Blocks * 8;
        var startsOut = j.Starts + (long)v * j.Blocks * 8;
        fixed (sbyte* q = codes)
        fixed (float* s = blockScales)
        fixed (int* lane = lanes)
        {
            for (var r = 0; r < 8; r++)
            {
                var t = v * 8 + r;
                var row = q + (long)r * ld;
                if (t >= j.M)
                {
                    new Span<sbyte>(row, ld).Clear();
                    for (var b = 0; b < j.Blocks; b++) { scalesOut[b * 8 + r] = 0; startsOut[b * 8 + r] = 0; }
                    continue;
                }
                QuantizeRow(j.X + (long)t * j.K, j.K, j.Blocks, row, s, lane, j.Zero, vnni: true);
                for (var b = 0; b < j.Blocks; b++)
                {
                    scalesOut[b * 8 + r] = s[b];
                    startsOut[b * 8 + r] = Vector256.Sum(Vector256.Load(lane + b * 8));
                }
            }
            var dst = j.Panels + (long)v * j.Blocks * 256;
            for (var b = 0; b < j.Blocks; b++)
                Transpose8x8((float*)(q + b * Block), ld / 4, (float*)(dst + b * 256), 8);
        }
    }

    /// <summary>Output channels 8·tile … 8·tile+7 for every activation row.</summary>
    private static void VnniTile(void* state, int tile)
    {
        ref var j = ref *(VnniJob*)state;
        var ld = j.Blocks * Block;
        var n0 = tile * 8;
        var channels = Math.Min(8, j.N - n0);
        var unpacked = Grow(ref _vnniChannelCodes, 8 * ld);
        var channelScales = Grow(ref _vnniChannelScales, 8 * j.Blocks);
        var tileOut = stackalloc float[8 * 16];
        fixed (byte* w = unpacked)
        fixed (float* sw = channelScales)
        {
            for (var c = 0; c < 8; c++)
            {
                var dst = w + c * ld;
                if (c >= channels)
                {
                    // Absent channels: zero codes and scales, computed and not stored.
                    new Span<byte>(dst, ld).Clear();
                    new Span<float>(sw + c * j.Blocks, j.Blocks).Clear();
                    continue;
                }
                var row = j.Codes + (long)(n0 + c) * j.RowBytes;
                for (var b = 0; b < j.Blocks; b++) Nibbles(row + b * (Block / 2)).Store(dst + b * Block);
                // One scale per block: with 32-code groups the converted group scales are the block scales.
                var blockScales = sw + c * j.Blocks;
                var groupScales = j.Scales + (long)(n0 + c) * j.Groups;
                if (j.BlocksPerGroup == 1 && j.Groups == j.Blocks) HalfToSingle(groupScales, blockScales, j.Blocks);
                else
                    for (var b = 0; b < j.Blocks; b++) blockScales[b] = (float)groupScales[Math.Min(b / j.BlocksPerGroup, j.Groups - 1)];
            }
            for (var v = 0; v < j.RowVectors; v += 2)
            {
                var pair = v + 1 < j.RowVectors;
                EightChannelsSixteenRows(ref j, w, sw, v, pair ? v + 1 : v, tileOut);
                for (var half = 0; half < (pair ? 2 : 1); half++)
                {
                    var t0 = (v + half) * 8;
                    var rows = Math.Min(8, j.M - t0);
                    for (var r = 0; r < rows; r++)
                    {
                        var yt = j.Y + (long)(t0 + r) * j.N + n0;
                        for (var c = 0; c < channels; c++)
                            yt[c] = (j.Accumulate ? yt[c] : 0) + tileOut[c * 16 + half * 8 + r];
                    }
                }
            }
        }
    }

    /// <summary>
    /// The 8×16 tile: channels of <paramref name="w"/> (unpacked codes) against row vectors <paramref name="v0"/> and
    /// <paramref name="v1"/>; out[c·16 + r] for rows r of v0 (0–7) and of v1 (8–15). Sixteen i32 accumulators keep
    /// enough <c>vpdpbusd</c> chains in flight to cover its latency; the float sums live in the (L1) output tile.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void EightChannelsSixteenRows(ref VnniJob j, byte* w, float* sw, int v0, int v1, float* out16)
    {
        var blocks = j.Blocks;
        var ld = blocks * Block;
        var x0 = (sbyte*)(j.Panels + (long)v0 * blocks * 256);
        var x1 = (sbyte*)(j.Panels + (long)v1 * blocks * 256);
        var st0 = j.Starts + (long)v0 * blocks * 8;
        var st1 = j.Starts + (long)v1 * blocks * 8;
        var sx0 = j.RowScales + (long)v0 * blocks * 8;
        var sx1 = j.RowScales + (long)v1 * blocks * 8;
        new Span<float>(out16, 8 * 16).Clear();
        for (var b = 0; b < blocks; b++)
        {
            var s0 = Vector256.Load(st0 + b * 8);
            var s1 = Vector256.Load(st1 + b * 8);
            Vector256<int> i00 = s0, i01 = s1, i10 = s0, i11 = s1, i20 = s0, i21 = s1, i30 = s0, i31 = s1;
            Vector256<int> i40 = s0, i41 = s1, i50 = s0, i51 = s1, i60 = s0, i61 = s1, i70 = s0, i71 = s1;
            var wb = w + b * Block;
            var xb0 = x0 + b * 256;
            var xb1 = x1 + b * 256;
            for (var s = 0; s < 8; s++)
            {
                var a0 = Vector256.Load(xb0 + s * 32);
                var a1 = Vector256.Load(xb1 + s * 32);
                var ws = wb + s * 4;
                var c = Vector256.Create(*(int*)ws).AsByte();
                i00 = AvxVnni.MultiplyWideningAndAdd(i00, c, a0); i01 = AvxVnni.MultiplyWideningAndAdd(i01, c, a1);
                c = Vector256.Create(*(int*)(ws + ld)).AsByte();
                i10 = AvxVnni.MultiplyWideningAndAdd(i10, c, a0); i11 = AvxVnni.MultiplyWideningAndAdd(i11, c, a1);
                c = Vector256.Create(*(int*)(ws + 2 * ld)).AsByte();
                i20 = AvxVnni.MultiplyWideningAndAdd(i20, c, a0); i21 = AvxVnni.MultiplyWideningAndAdd(i21, c, a1);
                c = Vector256.Create(*(int*)(ws + 3 * ld)).AsByte();
                i30 = AvxVnni.MultiplyWideningAndAdd(i30, c, a0); i31 = AvxVnni.MultiplyWideningAndAdd(i31, c, a1);
                c = Vector256.Create(*(int*)(ws + 4 * ld)).AsByte();
                i40 = AvxVnni.MultiplyWideningAndAdd(i40, c, a0); i41 = AvxVnni.MultiplyWideningAndAdd(i41, c, a1);
                c = Vector256.Create(*(int*)(ws + 5 * ld)).AsByte();
                i50 = AvxVnni.MultiplyWideningAndAdd(i50, c, a0); i51 = AvxVnni.MultiplyWideningAndAdd(i51, c, a1);
                c = Vector256.Create(*(int*)(ws + 6 * ld)).AsByte();
                i60 = AvxVnni.MultiplyWideningAndAdd(i60, c, a0); i61 = AvxVnni.MultiplyWideningAndAdd(i61, c, a1);
                c = Vector256.Create(*(int*)(ws + 7 * ld)).AsByte();
                i70 = AvxVnni.MultiplyWideningAndAdd(i70, c, a0); i71 = AvxVnni.MultiplyWideningAndAdd(i71, c, a1);
            }
            var r0 = Vector256.Load(sx0 + b * 8);
            var r1 = Vector256.Load(sx1 + b * 8);
            Scale(out16, i00, i01, r0, r1, sw[b]);
            Scale(out16 + 16, i10, i11, r0, r1, sw[blocks + b]);
            Scale(out16 + 32, i20, i21, r0, r1, sw[2 * blocks + b]);
            Scale(out16 + 48, i30, i31, r0, r1, sw[3 * blocks + b]);
            Scale(out16 + 64, i40, i41, r0, r1, sw[4 * blocks + b]);
            Scale(out16 + 80, i50, i51, r0, r1, sw[5 * blocks + b]);
            Scale(out16 + 96, i60, i61, r0, r1, sw[6 * blocks + b]);
            Scale(out16 + 112, i70, i71, r0, r1, sw[7 * blocks + b]);
        }
    }

    /// <summary>A channel's two block sums into its 16 float sums: + float(dot) · (sx · sw), as the decode path adds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scale(float* f, Vector256<int> d0, Vector256<int> d1, Vector256<float> sx0, Vector256<float> sx1, float sw)
    {
        var k = Vector256.Create(sw);
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(d0), sx0 * k, Vector256.Load(f)).Store(f);
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(d1), sx1 * k, Vector256.Load(f + 8)).Store(f + 8);
    }
}
