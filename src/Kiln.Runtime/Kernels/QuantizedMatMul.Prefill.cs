using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kiln.Runtime.Weights;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// Many activation rows (prefill, calibration, evaluation of whole sequences): the weights are dequantized to f32 and
/// multiplied by the f32 GEMM micro-kernel. Without VNNI every 32-code block costs an i16→i32 widening, an int→float
/// conversion and a scale multiply per row of x on top of the products, which leaves the integer path slower than
/// f32 FMAs; dequantizing costs a few instructions per weight once per call, shared by every row of x. The activations
/// are still rounded to the same int8/int16 blocks as on the integer path, so prefill and decode compute the same
/// model (only the order of float additions differs).
/// <para>
/// The roles are swapped to keep the dequantized weights in their stored row order: 8 output channels are the
/// micro-kernel's 8 rows (dequantized into a per-thread scratch row by row) and 32 activation rows are its 32 columns
/// (x transposed into panels once per call), so the tile computed is yᵀ, stored transposed.
/// </para>
/// </summary>
public static unsafe partial class QuantizedMatMul
{
    /// <summary>Activation rows from which the product runs as an f32 GEMM over dequantized weights.</summary>
    public const int DequantizedGemmRows = 16;

    [ThreadStatic] private static float[]? _xPanels;
    // What _xPanels holds: the rounded panels of this x, for these sizes and rounding.
    [ThreadStatic] private static float[]? _panelsInput;
    [ThreadStatic] private static float[]? _panelsStatic;
    [ThreadStatic] private static int _panelsM, _panelsK;
    [ThreadStatic] private static float _panelsLevels;
    [ThreadStatic] private static float[]? _weightRows;
    [ThreadStatic] private static float[]? _sums;

    private const int KSlice = 256;

    private static bool UsesDequantizedGemm(int m) => m >= DequantizedGemmRows && Avx512F.IsSupported && UseIntegerDotProduct;

    private struct DequantizedJob
    {
        public byte* Codes, Zeros;
        public Half* Scales;
        public float* XPanels, Y;
        public int M, N, K, Blocks, Groups, Group, RowBytes, Bits, Zero;
        public bool Accumulate;
    }

    /// <summary>y (+)= x·Wᵀ with x rounded to the blocks the integer path uses (int16 for 8-bit weights unless <paramref name="activationBits"/> is 8).</summary>
    private static void MultiplyDequantized(float* x, int m, QuantizedLayout l, byte* codes, Half* scales, byte* zeros, float* y, bool accumulate, int activationBits, float* staticScales)
    {
        var k = l.Columns;
        var tokenPanels = (m + 31) / 32;
        var levels = l.Bits == 8 ? activationBits == 8 ? 127f : 32767f : 0f;
        var panels = Grow(ref _xPanels, tokenPanels * 32 * k);
        fixed (float* pp = panels)
        {
            // The products that share an input (a layer's query, key and value; gate and up) round it once: the panels
            // are kept with a copy of the x they came from, and reused when the next x is the same, element for element.
            var input = new ReadOnlySpan<float>(x, m * k);
            var statics = staticScales == null ? default : new ReadOnlySpan<float>(staticScales, l.Blocks);
            if (!(_panelsM == m && _panelsK == k && _panelsLevels == levels && _panelsStatic.AsSpan().SequenceEqual(statics)
                && _panelsInput.AsSpan(0, Math.Min(_panelsInput?.Length ?? 0, m * k)).SequenceEqual(input)))
            {
                var transpose = new PanelJob { X = x, Panels = pp, M = m, K = k, Blocks = l.Blocks, Bits = l.Bits, Levels = activationBits == 8 ? 127f : 32767f, StaticScales = staticScales };
                WorkerTeam.For(tokenPanels, Parallelism.Threads, &RoundIntoPanel, &transpose);
                input.CopyTo(Grow(ref _panelsInput, m * k));
                if (!_panelsStatic.AsSpan().SequenceEqual(statics)) _panelsStatic = statics.ToArray();
                (_panelsM, _panelsK, _panelsLevels) = (m, k, levels);
            }
            var job = new DequantizedJob
            {
                Codes = codes, Zeros = l.Symmetric ? null : zeros, Scales = scales, XPanels = pp, Y = y,
                M = m, N = l.Rows, K = k, Blocks = l.Blocks, Groups = l.Groups, Group = l.Group, RowBytes = l.RowBytes,
                Bits = l.Bits, Zero = l.SymmetricZero, Accumulate = accumulate,
            };
            // A tile is ~10 µs of work: claimed one at a time, the two cores finish together.
            WorkerTeam.For((l.Rows + 7) / 8, Parallelism.Threads, &DequantizedTile, &job, chunk: 1);
        }
    }

    private struct PanelJob
    {
        public float* X, Panels, StaticScales;
        public int M, K, Blocks, Bits;
        public float Levels;
    }

    [ThreadStatic] private static sbyte[]? _rowCodes;
    [ThreadStatic] private static short[]? _rowCodes16;
    [ThreadStatic] private static float[]? _rowScales;
    [ThreadStatic] private static int[]? _rowLanes;

    [ThreadStatic] private static float[]? _roundedRows;

    /// <summary>
    /// 32 rows of x rounded to their blocks' codes × scale (rows past M are zero), then transposed into
    /// panel[kk·32 + t] = x[t, kk] by 8×8 blocks in registers: a store per element 128 bytes after the last one
    /// would touch a new cache line every time.
    /// </summary>
    private static void RoundIntoPanel(void* state, int panel)
    {
        ref var j = ref *(PanelJob*)state;
        var k = j.K;
        var codes = Grow(ref _rowCodes, j.Blocks * Block);
        var codes16 = Grow(ref _rowCodes16, j.Blocks * Block);
        var blockScales = Grow(ref _rowScales, j.Blocks);
        var lanes = Grow(ref _rowLanes, j.Blocks * 8);
        var rounded = Grow(ref _roundedRows, 32 * k);
        fixed (sbyte* q = codes)
        fixed (short* q16 = codes16)
        fixed (float* s = blockScales)
        fixed (int* lane = lanes)
        fixed (float* rows = rounded)
        {
            for (var tt = 0; tt < 32; tt++)
            {
                var t = panel * 32 + tt;
                var row = rows + (long)tt * k;
                if (t >= j.M)
                {
                    new Span<float>(row, k).Clear();
                    continue;
                }
                if (j.Bits == 8) QuantizeRow16(j.X + (long)t * k, k, j.Blocks, q16, s, j.Levels, j.StaticScales);
                else QuantizeRow(j.X + (long)t * k, k, j.Blocks, q, s, lane, 0, vnni: false);
                for (var b = 0; b < j.Blocks; b++)
                {
                    var scale = Vector256.Create(s[b]);
                    var kk = b * Block;
                    var k1 = Math.Min(k, kk + Block);
                    for (; kk + 8 <= k1; kk += 8)
                    {
                        var wide = j.Bits == 8 ? Avx2.ConvertToVector256Int32(q16 + kk) : Avx2.ConvertToVector256Int32(q + kk);
                        (Avx.ConvertToVector256Single(wide) * scale).Store(row + kk);
                    }
                    for (; kk < k1; kk++) row[kk] = (j.Bits == 8 ? q16[kk] : q[kk]) * s[b];
                }
            }
            var dst = j.Panels + (long)panel * 32 * k;
            var k8 = k / 8 * 8;
            for (var kk = 0; kk < k8; kk += 8)
                for (var t0 = 0; t0 < 32; t0 += 8)
                    Transpose8x8(rows + (long)t0 * k + kk, k, dst + (long)kk * 32 + t0, 32);
            for (var kk = k8; kk < k; kk++)
                for (var tt = 0; tt < 32; tt++) dst[(long)kk * 32 + tt] = rows[(long)tt * k + kk];
        }
    }

    /// <summary>dst[c·ldd + r] = src[r·lds + c] for an 8×8 block.</summary>
    private static void Transpose8x8(float* src, int lds, float* dst, int ldd)
    {
        var r0 = Vector256.Load(src); var r1 = Vector256.Load(src + lds);
        var r2 = Vector256.Load(src + 2 * lds); var r3 = Vector256.Load(src + 3 * lds);
        var r4 = Vector256.Load(src + 4 * lds); var r5 = Vector256.Load(src + 5 * lds);
        var r6 = Vector256.Load(src + 6 * lds); var r7 = Vector256.Load(src + 7 * lds);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(s0, s4, 0x20).Store(dst);
        Avx.Permute2x128(s1, s5, 0x20).Store(dst + ldd);
        Avx.Permute2x128(s2, s6, 0x20).Store(dst + 2 * ldd);
        Avx.Permute2x128(s3, s7, 0x20).Store(dst + 3 * ldd);
        Avx.Permute2x128(s0, s4, 0x31).Store(dst + 4 * ldd);
        Avx.Permute2x128(s1, s5, 0x31).Store(dst + 5 * ldd);
        Avx.Permute2x128(s2, s6, 0x31).Store(dst + 6 * ldd);
        Avx.Permute2x128(s3, s7, 0x31).Store(dst + 7 * ldd);
    }

    /// <summary>Output channels 8·tile … 8·tile+7 for every activation row.</summary>
    private static void DequantizedTile(void* state, int tile)
    {
        ref var j = ref *(DequantizedJob*)state;
        var ld = j.Blocks * Block;
        var rows = Grow(ref _weightRows, 8 * ld);
        var n0 = tile * 8;
        var channels = Math.Min(8, j.N - n0);
        var tokenPanels = (j.M + 31) / 32;
        var tiles = Grow(ref _sums, tokenPanels * 8 * 32);
        fixed (float* w = rows)
        fixed (float* allSums = tiles)
        {
            for (var r = 0; r < 8; r++)
            {
                if (r < channels) DequantizeRow(ref j, n0 + r, w + r * ld);
                else new Span<float>(w + r * ld, ld).Clear();
            }
            // K in slices, as the f32 GEMM blocks it: a slice of an x panel (32 KB) stays in L1 while the 8 rows use it.
            for (var k0 = 0; k0 < j.K; k0 += KSlice)
            {
                var kc = Math.Min(KSlice, j.K - k0);
                for (var p = 0; p < tokenPanels; p++)
                    MatMul.Kernel8x32(w + k0, ld, j.XPanels + (long)p * 32 * j.K + (long)k0 * 32, kc, allSums + p * 256, 32, accumulate: k0 > 0);
            }
            for (var t0 = 0; t0 < j.M; t0 += 32)
            {
                var sums = allSums + t0 / 32 * 256;
                var tokens = Math.Min(32, j.M - t0);
                var t = 0;
                if (channels == 8 && Avx2.IsSupported)
                {
                    // Column t of the 8×32 tile is y[t0 + t, n0 … n0+7]: one gather and one 8-float store per activation row.
                    var stride = Vector256.Create(0, 32, 64, 96, 128, 160, 192, 224);
                    for (; t < tokens; t++)
                    {
                        var yt = j.Y + (long)(t0 + t) * j.N + n0;
                        var v = Avx2.GatherVector256(sums + t, stride, 4);
                        (j.Accumulate ? v + Vector256.Load(yt) : v).Store(yt);
                    }
                }
                for (; t < tokens; t++)
                    for (var r = 0; r < channels; r++)
                    {
                        ref var yv = ref j.Y[(long)(t0 + t) * j.N + n0 + r];
                        yv = j.Accumulate ? yv + sums[r * 32 + t] : sums[r * 32 + t];
                    }
            }
        }
    }

    /// <summary>One output channel's weights as f32, scale·(code − zero), as <see cref="QuantizedWeights.DequantizeRow"/> computes them.</summary>
    private static void DequantizeRow(ref DequantizedJob j, int row, float* dst)
    {
        var codes = j.Codes + (long)row * j.RowBytes;
        var blocksPerGroup = Math.Max(1, j.Group / Block);
        for (var b = 0; b < j.Blocks; b++)
        {
            // Scale and zero point change once per group (every block when groups are 32 codes).
            var g = Math.Min(b / blocksPerGroup, j.Groups - 1);
            var scale = Vector512.Create((float)j.Scales[(long)row * j.Groups + g]);
            var zero = Vector512.Create((float)(j.Zeros is null ? j.Zero : j.Zeros[(long)row * j.Groups + g]));
            Vector128<byte> first, second;
            if (j.Bits == 4)
            {
                var unpacked = Nibbles(codes + b * (Block / 2));
                first = unpacked.GetLower();
                second = unpacked.GetUpper();
            }
            else
            {
                first = Vector128.Load(codes + b * Block);
                second = Vector128.Load(codes + b * Block + 16);
            }
            var d = dst + b * Block;
            ((Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(first)) - zero) * scale).Store(d);
            ((Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(second)) - zero) * scale).Store(d + 16);
        }
    }
}
