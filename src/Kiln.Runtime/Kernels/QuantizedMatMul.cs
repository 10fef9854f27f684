using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kiln.Runtime.Weights;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// y = x·Wᵀ for a quantized W (<see cref="QuantizedLayout"/>: int8 or int4 codes, f16 scales per group). On 2 cores
/// a quantized GEMV is compute-bound, so the product runs on integers, as the fast CPU engines do: each row of x is
/// quantized on the fly to int8 in blocks of 32 (one f32 scale per block), and each block's dot product of unsigned
/// weight codes with signed activation codes is u8·s8 summed by fours into i32 lanes: one AVX-VNNI <c>vpdpbusd</c>,
/// or <c>vpmaddubsw</c> + <c>vpmaddwd</c> where the CPU lacks it (symmetric 4-bit: two blocks per AVX-512 step). The zero point is taken out exactly in the integer domain: the accumulator of a block starts at
/// −zero·Σxq lane by lane (computed once per activation block), so the lanes hold Σ(code − zero)·xq. The i32 lanes
/// are then scaled by (activation scale × weight scale) into f32 accumulators. Without AVX-VNNI the same integer
/// math runs on portable <see cref="Vector128"/> code. Output channels are split across threads.
/// <para>
/// 8-bit weights take int16 activations instead (per 32-block scale max|x|/32767) and <c>vpmaddwd</c>: an int8
/// activation's rounding error is as large as an int8 weight's, and would double the error the format exists to
/// keep small; 4-bit weights' own error is ~16× larger, so int8 activations cost them nothing measurable.
/// </para>
/// </summary>
public static unsafe partial class QuantizedMatMul
{
    /// <summary>Whether this CPU has the x86 integer path (AVX2 with FMA; AVX-VNNI where the CPU has it).</summary>
    public static bool IntegerDotProductAvailable { get; } = Avx2.IsSupported && Fma.IsSupported;

    [ThreadStatic] private static bool? _integerDotProduct;

    /// <summary>Whether products called from this thread take the integer path: where available, unless a test chose otherwise on this thread.</summary>
    public static bool UseIntegerDotProduct => _integerDotProduct ?? IntegerDotProductAvailable;

    /// <summary>
    /// Chooses the path for products called from this thread until the scope is disposed (tests compare the portable
    /// path with the integer one). Per thread, never global: a model running elsewhere keeps its path.
    /// </summary>
    public static IntegerPathScope UseIntegerPath(bool integer)
    {
        var previous = _integerDotProduct;
        _integerDotProduct = integer && IntegerDotProductAvailable;
        return new IntegerPathScope(previous);
    }

    /// <summary>Restores the path chosen before <see cref="UseIntegerPath"/>.</summary>
    public readonly struct IntegerPathScope(bool? previous) : IDisposable
    {
        public void Dispose() => _integerDotProduct = previous;
    }

    /// <summary>
    /// start + Σ of 4 consecutive u8·s8 products per i32 lane: one <c>vpdpbusd</c> with AVX-VNNI, else
    /// <c>vpmaddubsw</c> (pairs into i16; 4-bit codes times int8 stay far from its saturation) and <c>vpmaddwd</c> by 1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotAdd(Vector256<int> start, Vector256<byte> u, Vector256<sbyte> x) =>
        AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(start, u, x)
            : start + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, x), Vector256.Create((short)1));

    private const int Block = QuantizedLayout.Block;

    // Activation codes of the calling thread's last call, grown as needed and pinned (worker threads read them).
    [ThreadStatic] private static sbyte[]? _xq;
    [ThreadStatic] private static float[]? _xs;
    [ThreadStatic] private static int[]? _lanes;
    [ThreadStatic] private static short[]? _xq16;
    [ThreadStatic] private static sbyte[]? _pairXq;
    [ThreadStatic] private static int[]? _pairStart;
    [ThreadStatic] private static float[]? _pairXs;

    /// <summary>Whether symmetric 4-bit products take two blocks per AVX-512 instruction.</summary>
    private static bool Wide512 => Avx512BW.IsSupported && Avx512F.IsSupported;

    /// <summary>y[m, n] (+)= Σ_k x[m, k]·W[n, k] with x quantized to int8 per 32-block.</summary>
    /// <param name="activationBits">0: the kernel's choice (int16 for 8-bit weights, int8 for 4-bit); 8: int8 activations
    /// for 8-bit weights too (W8A8, as quantize-activations asks).</param>
    /// <param name="activationScales">static activation scales, one per 32-block of a row (quantize-activations{mode=static}:
    /// 8-bit weights with int8 activations); empty: each row's blocks are scaled as they arrive.</param>
    public static void Multiply(ReadOnlySpan<float> x, int m, QuantizedLayout l, ReadOnlySpan<byte> codes, ReadOnlySpan<Half> scales,
        ReadOnlySpan<byte> zeros, Span<float> y, bool accumulate = false, int activationBits = 0, ReadOnlySpan<float> activationScales = default)
    {
        if (activationBits is not (0 or 8 or 16)) throw new KernelException($"activations are quantized to 8 or 16 bits, not {activationBits}");
        if (!activationScales.IsEmpty && (l.Bits != 8 || activationBits != 8 || activationScales.Length != l.Blocks))
            throw new KernelException($"static activation scales are for 8-bit weights with int8 activations, one per 32-block ({l.Blocks}); got {activationScales.Length} for {l.Name} with {activationBits}-bit activations");
        if (x.Length < (long)m * l.Columns || y.Length < (long)m * l.Rows || codes.Length < l.CodeBytes || scales.Length < l.Rows * l.Groups
            || !l.Symmetric && zeros.Length < l.Rows * l.Groups)
            throw new KernelException($"quantized MatMul ({l.Name}, {l.Rows}×{l.Columns}) got x of {x.Length}, y of {y.Length}, {codes.Length} code bytes, {scales.Length} scales");
        if (m == 0) return;
        if (UsesVnniGemm(m, l))
        {
            fixed (float* px = x)
            fixed (float* py = y)
            fixed (byte* pc = codes)
            fixed (Half* ps = scales)
                MultiplyVnni(px, m, l, pc, ps, py, accumulate);
            return;
        }
        if (UsesDequantizedGemm(m))
        {
            fixed (float* px = x)
            fixed (float* py = y)
            fixed (byte* pc = codes)
            fixed (Half* ps = scales)
            fixed (byte* pz = zeros)
            fixed (float* pa = activationScales)
                MultiplyDequantized(px, m, l, pc, ps, pz, py, accumulate, activationBits, activationScales.IsEmpty ? null : pa);
            return;
        }
        var blocks = l.Blocks;
        var wide = l.Bits == 8;
        var xq = Grow(ref _xq, wide ? 1 : m * blocks * Block);
        var xq16 = Grow(ref _xq16, wide ? m * blocks * Block : 1);
        var xs = Grow(ref _xs, m * blocks);
        var lanes = Grow(ref _lanes, wide ? 1 : m * blocks * 8);
        var vnni = UseIntegerDotProduct;
        // Pairs of blocks share one weight scale vector: a pair must not straddle two groups of more than one block.
        var blocksPerGroup = l.Group >= l.Columns ? blocks : l.Group / Block;
        var pairs = !wide && vnni && l.Symmetric && Wide512 && (blocksPerGroup == 1 || blocksPerGroup % 2 == 0 || l.Groups == 1) ? blocks / 2 : 0;
        var pairXq = Grow(ref _pairXq, Math.Max(1, m * pairs * 64));
        var pairStart = Grow(ref _pairStart, Math.Max(1, m * pairs * 16));
        var pairXs = Grow(ref _pairXs, Math.Max(1, m * pairs * 16));
        fixed (float* px = x)
        fixed (float* py = y)
        fixed (byte* pc = codes)
        fixed (Half* ps = scales)
        fixed (byte* pz = zeros)
        fixed (sbyte* pq = xq)
        fixed (short* pq16 = xq16)
        fixed (float* pxs = xs)
        fixed (int* pl = lanes)
        fixed (sbyte* ppq = pairXq)
        fixed (int* pps = pairStart)
        fixed (float* ppx = pairXs)
        fixed (float* pstatic = activationScales)
        {
            for (var i = 0; i < m; i++)
            {
                if (wide) QuantizeRow16(px + (long)i * l.Columns, l.Columns, blocks, pq16 + (long)i * blocks * Block, pxs + (long)i * blocks, activationBits == 8 ? 127f : 32767f,
                    activationScales.IsEmpty ? null : pstatic);
                else QuantizeRow(px + (long)i * l.Columns, l.Columns, blocks, pq + (long)i * blocks * Block, pxs + (long)i * blocks,
                    pl + (long)i * blocks * 8, l.Symmetric ? l.SymmetricZero : 0, vnni);
                if (pairs > 0)
                    ArrangePairs(pq + (long)i * blocks * Block, pl + (long)i * blocks * 8, pxs + (long)i * blocks, pairs,
                        ppq + (long)i * pairs * 64, pps + (long)i * pairs * 16, ppx + (long)i * pairs * 16);
            }
            var job = new Job
            {
                Codes = pc, Scales = ps, Zeros = l.Symmetric ? null : pz, Xq = pq, Xq16 = pq16, Xs = pxs, Lanes = pl, Y = py,
                M = m, N = l.Rows, Blocks = blocks, Groups = l.Groups, BlocksPerGroup = blocksPerGroup,
                RowBytes = l.RowBytes, Bits = l.Bits, Zero = l.SymmetricZero, Accumulate = accumulate, Vnni = vnni,
                Pairs = pairs, PairXq = ppq, PairStart = pps, PairXs = ppx,
            };
            // Tiles of 16 output channels; small products stay on the calling thread.
            var tiles = (l.Rows + TileRows - 1) / TileRows;
            var threads = (long)m * l.Rows * l.Columns < 1 << 18 ? 1 : Parallelism.Threads;
            WorkerTeam.For(tiles, threads, &RunTile, &job);
        }
    }

    private const int TileRows = 16;

    private static T[] Grow<T>(ref T[]? buffer, int length)
    {
        if (buffer is null || buffer.Length < length) buffer = GC.AllocateUninitializedArray<T>(Math.Max(length, 1024), pinned: true);
        return buffer;
    }

    private struct Job
    {
        public byte* Codes;
        public Half* Scales;
        public byte* Zeros;
        public sbyte* Xq;
        public short* Xq16;
        public float* Xs;
        public int* Lanes;
        public float* Y;
        public int M, N, Blocks, Groups, BlocksPerGroup, RowBytes, Bits, Zero, Pairs;
        public bool Accumulate, Vnni;
        public sbyte* PairXq;
        public int* PairStart;
        public float* PairXs;
    }

    /// <summary>
    /// Quantizes one row of x: per block of 32, scale = max|x|/127 and codes round(x/scale) (ties to even, as the
    /// vector conversion does). <paramref name="lanes"/> gets, per block, the 8 sums of 4 consecutive codes, times
    /// −<paramref name="zero"/> when the format is symmetric (the accumulator's start), else the plain sums.
    /// </summary>
    private static void QuantizeRow(float* x, int k, int blocks, sbyte* q, float* scale, int* lanes, int zero, bool vnni)
    {
        var tail = stackalloc float[Block];
        for (var b = 0; b < blocks; b++)
        {
            var src = x + (long)b * Block;
            var count = Math.Min(Block, k - b * Block);
            if (count < Block)
            {
                new Span<float>(tail, Block).Clear();
                new ReadOnlySpan<float>(src, count).CopyTo(new Span<float>(tail, Block));
                src = tail;
            }
            var dst = q + (long)b * Block;
            var lane = lanes + (long)b * 8;
            if (Vector256.IsHardwareAccelerated)
            {
                var v0 = Vector256.Load(src);
                var v1 = Vector256.Load(src + 8);
                var v2 = Vector256.Load(src + 16);
                var v3 = Vector256.Load(src + 24);
                var amax = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
                var max = HorizontalMax(amax);
                scale[b] = max / 127f;
                var inv = Vector256.Create(max > 0 ? 127f / max : 0f);
                var i0 = Vector256.ConvertToInt32(Vector256.Round(v0 * inv));
                var i1 = Vector256.ConvertToInt32(Vector256.Round(v1 * inv));
                var i2 = Vector256.ConvertToInt32(Vector256.Round(v2 * inv));
                var i3 = Vector256.ConvertToInt32(Vector256.Round(v3 * inv));
                var codes = Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3));
                codes.Store(dst);
                if (vnni)
                {
                    var sums = DotAdd(Vector256<int>.Zero, Vector256.Create((byte)1), codes);
                    (zero == 0 ? sums : sums * -zero).Store(lane);
                    continue;
                }
            }
            else
            {
                var max = 0f;
                for (var j = 0; j < Block; j++) max = MathF.Max(max, MathF.Abs(src[j]));
                scale[b] = max / 127f;
                var inv = max > 0 ? 127f / max : 0f;
                for (var j = 0; j < Block; j++) dst[j] = (sbyte)(int)MathF.Round(src[j] * inv);
            }
            for (var i = 0; i < 8; i++)
            {
                var s = dst[4 * i] + dst[4 * i + 1] + dst[4 * i + 2] + dst[4 * i + 3];
                lane[i] = zero == 0 ? s : -zero * s;
            }
        }
    }

    /// <summary>
    /// One row of x as int16 codes per 32-block (scale max|x|/<paramref name="levels"/>: 32767, or 127 for int8 values),
    /// for 8-bit weights. With <paramref name="staticScales"/> (quantize-activations{mode=static}) each block's scale is
    /// fixed from calibration and codes beyond ±levels are clamped.
    /// </summary>
    private static void QuantizeRow16(float* x, int k, int blocks, short* q, float* scale, float levels, float* staticScales = null)
    {
        var lowest = Vector256.Create(-levels);
        var highest = Vector256.Create(levels);
        for (var b = 0; b < blocks; b++)
        {
            var count = Math.Min(Block, k - b * Block);
            var src = x + (long)b * Block;
            float inv;
            if (staticScales != null)
            {
                scale[b] = staticScales[b];
                inv = staticScales[b] > 0 ? 1f / staticScales[b] : 0f;
            }
            else
            {
                var max = 0f;
                for (var j = 0; j < count; j++) max = MathF.Max(max, MathF.Abs(src[j]));
                scale[b] = max / levels;
                inv = max > 0 ? levels / max : 0f;
            }
            var dst = q + (long)b * Block;
            var j2 = 0;
            if (Vector256.IsHardwareAccelerated)
                for (; j2 + 16 <= count; j2 += 16)
                {
                    var lo = Vector256.ConvertToInt32(Vector256.Clamp(Vector256.Round(Vector256.Load(src + j2) * inv), lowest, highest));
                    var hi = Vector256.ConvertToInt32(Vector256.Clamp(Vector256.Round(Vector256.Load(src + j2 + 8) * inv), lowest, highest));
                    Vector256.Narrow(lo, hi).Store(dst + j2);
                }
            for (; j2 < count; j2++) dst[j2] = (short)(int)Math.Clamp(MathF.Round(src[j2] * inv), -levels, levels);
            for (; j2 < Block; j2++) dst[j2] = 0;
        }
    }

    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2)));
        return m.ToScalar();
    }

    private static void RunTile(void* state, int tile)
    {
        ref var j = ref *(Job*)state;
        var n0 = tile * TileRows;
        var n1 = Math.Min(j.N, n0 + TileRows);
        // Each row's scales as f32, once per call (the block loop multiplies by them 32 codes at a time).
        var rowScales = stackalloc float[j.Groups * 4 + 16];  // slack for 16-float loads
        var n = n0;
        // Four output channels at a time where a kernel exists for the format and CPU; the rest one at a time.
        delegate*<ref Job, int, int, float*, void> four = j.Bits == 8 ? (j.Vnni && Wide512 ? &FourRows16x512 : null)
            : j.Pairs > 0 ? &FourRowsPairs512 : j.Vnni ? &FourRowsVnni : null;
        if (four != null)
            for (; n + 4 <= n1; n += 4)
            {
                HalfToSingle(j.Scales + (long)n * j.Groups, rowScales, j.Groups * 4);
                var i = 0;
                if (j.Pairs > 0)
                    for (; i + 2 <= j.M; i += 2) FourRowsTwoTokensPairs512(ref j, n, i, rowScales);
                for (; i < j.M; i++) four(ref j, n, i, rowScales);
            }
        delegate*<ref Job, int, int, float*, float> one = j.Bits == 8 ? (j.Vnni ? &OneRow16 : &OneRow16Portable) : (j.Vnni ? &OneRowVnni : &OneRowPortable);
        for (; n < n1; n++)
        {
            HalfToSingle(j.Scales + (long)n * j.Groups, rowScales, j.Groups);
            for (var i = 0; i < j.M; i++)
            {
                var dot = one(ref j, n, i, rowScales);
                ref var y = ref j.Y[(long)i * j.N + n];
                y = j.Accumulate ? y + dot : dot;
            }
        }
    }

    /// <summary>
    /// Activation blocks b and b+1 rearranged for the AVX-512 path: a 64-byte 4-bit code pair unpacks to
    /// [b codes 0–15, b+1 codes 0–15, b codes 16–31, b+1 codes 16–31] (low nibbles, then high), so the activations are
    /// stored in that order, with the accumulator starts and scales to match (i32/f32 lanes 0–3 and 8–11 are block b).
    /// </summary>
    private static void ArrangePairs(sbyte* xq, int* lanes, float* xs, int pairs, sbyte* pxq, int* pstart, float* pxs)
    {
        for (var p = 0; p < pairs; p++)
        {
            var b = 2 * p;
            var src = xq + (long)b * Block;
            var dst = pxq + (long)p * 64;
            new ReadOnlySpan<sbyte>(src, 16).CopyTo(new Span<sbyte>(dst, 16));
            new ReadOnlySpan<sbyte>(src + 32, 16).CopyTo(new Span<sbyte>(dst + 16, 16));
            new ReadOnlySpan<sbyte>(src + 16, 16).CopyTo(new Span<sbyte>(dst + 32, 16));
            new ReadOnlySpan<sbyte>(src + 48, 16).CopyTo(new Span<sbyte>(dst + 48, 16));
            var l = lanes + (long)b * 8;
            var st = pstart + (long)p * 16;
            for (var t = 0; t < 4; t++) { st[t] = l[t]; st[4 + t] = l[8 + t]; st[8 + t] = l[4 + t]; st[12 + t] = l[12 + t]; }
            var sx = pxs + (long)p * 16;
            for (var t = 0; t < 4; t++) { sx[t] = xs[b]; sx[4 + t] = xs[b + 1]; sx[8 + t] = xs[b]; sx[12 + t] = xs[b + 1]; }
        }
    }

    /// <summary>Four output channels, two 32-blocks per step on 512-bit vectors (symmetric 4-bit codes); an odd last block on 256 bits.</summary>
    private static void FourRowsPairs512(ref Job j, int n, int i, float* rowScales)
    {
        var rb = j.RowBytes;
        var r0 = j.Codes + (long)n * rb;
        var xq = j.PairXq + (long)i * j.Pairs * 64;
        var starts = j.PairStart + (long)i * j.Pairs * 16;
        var xsp = j.PairXs + (long)i * j.Pairs * 16;
        var groups = j.Groups;
        var bpg = j.BlocksPerGroup;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        var mask = Vector256.Create((byte)15);
        var ones = Vector512.Create((short)1);
        // Groups of one block: block b's scale for lanes 0–3 and 8–11, block b+1's for 4–7 and 12–15. Larger groups
        // hold both blocks of a pair (their block counts are even, or there is one group), so their scale is broadcast.
        var pick = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        for (var p = 0; p < j.Pairs; p++)
        {
            var x = Vector512.Load(xq + p * 64);
            var st = Vector512.Load(starts + p * 16);
            var xs = Vector512.Load(xsp + p * 16);
            var b = 2 * p;
            Vector512<float> s0, s1, s2, s3;
            if (bpg == 1)
            {
                s0 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + b), pick) * xs;
                s1 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + groups + b), pick) * xs;
                s2 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + 2 * groups + b), pick) * xs;
                s3 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + 3 * groups + b), pick) * xs;
            }
            else
            {
                var g = Math.Min(b / bpg, groups - 1);
                s0 = xs * rowScales[g];
                s1 = xs * rowScales[groups + g];
                s2 = xs * rowScales[2 * groups + g];
                s3 = xs * rowScales[3 * groups + g];
            }
            // The next four rows follow these in memory: ask for them now, so streaming weights from memory overlaps the math.
            var ahead = r0 + 8 * rb + p * 32;
            Sse.Prefetch0(ahead);
            Sse.Prefetch0(ahead + rb);
            Sse.Prefetch0(ahead + 2 * rb);
            Sse.Prefetch0(ahead + 3 * rb);
            a0 = Pair(r0 + p * 32, x, st, s0, mask, ones, a0);
            a1 = Pair(r0 + rb + p * 32, x, st, s1, mask, ones, a1);
            a2 = Pair(r0 + 2 * rb + p * 32, x, st, s2, mask, ones, a2);
            a3 = Pair(r0 + 3 * rb + p * 32, x, st, s3, mask, ones, a3);
        }
        var sums = Sum4(a0, a1, a2, a3);
        var blocks = j.Blocks;
        if ((blocks & 1) != 0)
        {
            // The odd last block, from the natural-order activations.
            var b = blocks - 1;
            var g = groups - 1;
            var xn = Vector256.Load(j.Xq + (long)i * blocks * Block + b * Block);
            var start = Vector256.Load(j.Lanes + (long)i * blocks * 8 + b * 8);
            var sx = j.Xs[(long)i * blocks + b];
            for (var r = 0; r < 4; r++)
            {
                var d = DotAdd(start, Codes(ref j, r0 + r * rb, b), xn);
                sums = sums.WithElement(r, sums.GetElement(r) + Vector256.Sum(Avx.ConvertToVector256Single(d)) * sx * rowScales[r * groups + g]);
            }
        }
        StoreFour(ref j, n, i, sums);
    }

    /// <summary>
    /// f16 → f32 by bits: the exponent and mantissa shifted into place and scaled by 2^112 re-bias the exponent, which
    /// is exact for normal and subnormal values (scales are finite). TensorPrimitives' conversion costs as much as the
    /// product of a 4-row tile at decode; this is a few instructions per 8 scales.
    /// </summary>
    private static void HalfToSingle(Half* src, float* dst, int count)
    {
        var h = (ushort*)src;
        var i = 0;
        if (Avx512F.IsSupported)
        {
            // 16 at a time: decoding converts every scale of the model once per token.
            var rebias = Vector512.Create(5.192296858534828e33f);
            for (; i + 16 <= count; i += 16)
            {
                var bits = Avx512F.ConvertToVector512UInt32(Vector256.Load(h + i));
                var magnitude = ((bits & Vector512.Create(0x7FFFu)) << 13).AsSingle() * rebias;
                (magnitude.AsUInt32() | ((bits & Vector512.Create(0x8000u)) << 16)).AsSingle().Store(dst + i);
            }
        }
        if (Avx2.IsSupported)
        {
            var rebias = Vector256.Create(5.192296858534828e33f);
            for (; i + 8 <= count; i += 8)
            {
                var bits = Avx2.ConvertToVector256Int32(h + i).AsUInt32();
                var magnitude = ((bits & Vector256.Create(0x7FFFu)) << 13).AsSingle() * rebias;
                (magnitude.AsUInt32() | ((bits & Vector256.Create(0x8000u)) << 16)).AsSingle().Store(dst + i);
            }
        }
        for (; i < count; i++) dst[i] = (float)src[i];
    }

    /// <summary>
    /// Four output channels for activation rows i and i+1 (prefill): each unpacked pair of weight blocks serves both
    /// rows, each activation pair all four channels. Odd last blocks go through the one-row path.
    /// </summary>
    private static void FourRowsTwoTokensPairs512(ref Job j, int n, int i, float* rowScales)
    {
        if ((j.Blocks & 1) != 0)
        {
            FourRowsPairs512(ref j, n, i, rowScales);
            FourRowsPairs512(ref j, n, i + 1, rowScales);
            return;
        }
        var rb = j.RowBytes;
        var r0 = j.Codes + (long)n * rb;
        var stride = (long)j.Pairs * 64;
        var xq = j.PairXq + i * stride;
        var starts = j.PairStart + (long)i * j.Pairs * 16;
        var xsp = j.PairXs + (long)i * j.Pairs * 16;
        var next = j.Pairs * 16;
        var groups = j.Groups;
        var bpg = j.BlocksPerGroup;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, c0 = default, c1 = default, c2 = default, c3 = default;
        var mask = Vector256.Create((byte)15);
        var ones = Vector512.Create((short)1);
        var pick = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        for (var p = 0; p < j.Pairs; p++)
        {
            var xa = Vector512.Load(xq + p * 64);
            var xb = Vector512.Load(xq + stride + p * 64);
            var sta = Vector512.Load(starts + p * 16);
            var stb = Vector512.Load(starts + next + p * 16);
            var xsa = Vector512.Load(xsp + p * 16);
            var xsb = Vector512.Load(xsp + next + p * 16);
            var b = 2 * p;
            Vector512<float> w0, w1, w2, w3;
            if (bpg == 1)
            {
                w0 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + b), pick);
                w1 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + groups + b), pick);
                w2 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + 2 * groups + b), pick);
                w3 = Avx512F.PermuteVar16x32(Vector512.Load(rowScales + 3 * groups + b), pick);
            }
            else
            {
                var g = Math.Min(b / bpg, groups - 1);
                w0 = Vector512.Create(rowScales[g]);
                w1 = Vector512.Create(rowScales[groups + g]);
                w2 = Vector512.Create(rowScales[2 * groups + g]);
                w3 = Vector512.Create(rowScales[3 * groups + g]);
            }
            var u = Unpack(r0 + p * 32, mask);
            a0 = Avx512F.FusedMultiplyAdd(Dot(u, xa, sta, ones), w0 * xsa, a0);
            c0 = Avx512F.FusedMultiplyAdd(Dot(u, xb, stb, ones), w0 * xsb, c0);
            u = Unpack(r0 + rb + p * 32, mask);
            a1 = Avx512F.FusedMultiplyAdd(Dot(u, xa, sta, ones), w1 * xsa, a1);
            c1 = Avx512F.FusedMultiplyAdd(Dot(u, xb, stb, ones), w1 * xsb, c1);
            u = Unpack(r0 + 2 * rb + p * 32, mask);
            a2 = Avx512F.FusedMultiplyAdd(Dot(u, xa, sta, ones), w2 * xsa, a2);
            c2 = Avx512F.FusedMultiplyAdd(Dot(u, xb, stb, ones), w2 * xsb, c2);
            u = Unpack(r0 + 3 * rb + p * 32, mask);
            a3 = Avx512F.FusedMultiplyAdd(Dot(u, xa, sta, ones), w3 * xsa, a3);
            c3 = Avx512F.FusedMultiplyAdd(Dot(u, xb, stb, ones), w3 * xsb, c3);
        }
        StoreFour(ref j, n, i, Sum4(a0, a1, a2, a3));
        StoreFour(ref j, n, i + 1, Sum4(c0, c1, c2, c3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> Unpack(byte* codes, Vector256<byte> mask)
    {
        var packed = Vector256.Load(codes);
        return Vector512.Create(packed & mask, Vector256.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & mask);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dot(Vector512<byte> u, Vector512<sbyte> x, Vector512<int> start, Vector512<short> ones) =>
        Avx512F.ConvertToVector512Single(start + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, x), ones));

    /// <summary>y[i, n..n+3] (+)= the four channels' sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFour(ref Job j, int n, int i, Vector128<float> sums)
    {
        var y = j.Y + (long)i * j.N + n;
        if (j.Accumulate) sums += Vector128.Load(y);
        sums.Store(y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Sum4(Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3) =>
        Sum4(a0.GetLower() + a0.GetUpper(), a1.GetLower() + a1.GetUpper(), a2.GetLower() + a2.GetUpper(), a3.GetLower() + a3.GetUpper());

    /// <summary>The four vectors' element sums, by pairwise horizontal adds (a few instructions instead of four reductions).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Sum4(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3)
    {
        var h = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));
        return h.GetLower() + h.GetUpper();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Pair(byte* codes, Vector512<sbyte> x, Vector512<int> start, Vector512<float> scale,
        Vector256<byte> mask, Vector512<short> ones, Vector512<float> acc)
    {
        return Avx512F.FusedMultiplyAdd(Dot(Unpack(codes, mask), x, start, ones), scale, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Codes(ref Job j, byte* row, int b) =>
        j.Bits == 8 ? Vector256.Load(row + b * Block) : Nibbles(row + b * (Block / 2));

    /// <summary>The 32 codes of a 4-bit block (16 bytes: low nibbles hold codes 0–15, high nibbles 16–31), a byte each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles(byte* block)
    {
        var packed = Vector128.Load(block);
        var mask = Vector128.Create((byte)15);
        return Vector256.Create(packed & mask, Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & mask);
    }

    /// <summary>Four output channels n..n+3 for activation row i: the activation block is loaded once for all four.</summary>
    private static void FourRowsVnni(ref Job j, int n, int i, float* rowScales)
    {
        var r0 = j.Codes + (long)n * j.RowBytes;
        var r1 = r0 + j.RowBytes;
        var r2 = r1 + j.RowBytes;
        var r3 = r2 + j.RowBytes;
        var xq = j.Xq + (long)i * j.Blocks * Block;
        var xs = j.Xs + (long)i * j.Blocks;
        var lanes = j.Lanes + (long)i * j.Blocks * 8;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        var groups = j.Groups;
        for (int g = 0, b = 0; g < groups; g++)
        {
            var bEnd = g == groups - 1 ? j.Blocks : Math.Min(j.Blocks, b + j.BlocksPerGroup);
            float s0 = rowScales[g], s1 = rowScales[groups + g], s2 = rowScales[2 * groups + g], s3 = rowScales[3 * groups + g];
            Vector256<int> z0, z1, z2, z3;
            if (j.Zeros is null) { z0 = z1 = z2 = z3 = default; }
            else
            {
                var zr = j.Zeros + (long)n * groups + g;
                z0 = Vector256.Create(-(int)zr[0]); z1 = Vector256.Create(-(int)zr[groups]);
                z2 = Vector256.Create(-(int)zr[2 * groups]); z3 = Vector256.Create(-(int)zr[3 * groups]);
            }
            for (; b < bEnd; b++)
            {
                var x = Vector256.Load(xq + b * Block);
                var start = Vector256.Load(lanes + b * 8);
                Vector256<int> st0 = start, st1 = start, st2 = start, st3 = start;
                if (j.Zeros is not null) { st0 = start * z0; st1 = start * z1; st2 = start * z2; st3 = start * z3; }
                var d0 = DotAdd(st0, Codes(ref j, r0, b), x);
                var d1 = DotAdd(st1, Codes(ref j, r1, b), x);
                var d2 = DotAdd(st2, Codes(ref j, r2, b), x);
                var d3 = DotAdd(st3, Codes(ref j, r3, b), x);
                var sx = xs[b];
                a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(d0), Vector256.Create(sx * s0), a0);
                a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(d1), Vector256.Create(sx * s1), a1);
                a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(d2), Vector256.Create(sx * s2), a2);
                a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(d3), Vector256.Create(sx * s3), a3);
            }
        }
        StoreFour(ref j, n, i, Sum4(a0, a1, a2, a3));
    }

    private static float OneRowVnni(ref Job j, int n, int i, float* rowScales)
    {
        var row = j.Codes + (long)n * j.RowBytes;
        var xq = j.Xq + (long)i * j.Blocks * Block;
        var xs = j.Xs + (long)i * j.Blocks;
        var lanes = j.Lanes + (long)i * j.Blocks * 8;
        var acc = Vector256<float>.Zero;
        for (int g = 0, b = 0; g < j.Groups; g++)
        {
            var bEnd = g == j.Groups - 1 ? j.Blocks : Math.Min(j.Blocks, b + j.BlocksPerGroup);
            var z = j.Zeros is null ? 1 : -(int)j.Zeros[(long)n * j.Groups + g];
            for (; b < bEnd; b++)
            {
                var start = Vector256.Load(lanes + b * 8);
                if (j.Zeros is not null) start *= z;
                var d = DotAdd(start, Codes(ref j, row, b), Vector256.Load(xq + b * Block));
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(d), Vector256.Create(xs[b] * rowScales[g]), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    /// <summary>The same integer math on portable 128-bit vectors: codes and activations widened to i16, products summed in i32.</summary>
    private static float OneRowPortable(ref Job j, int n, int i, float* rowScales)
    {
        var row = j.Codes + (long)n * j.RowBytes;
        var xq = j.Xq + (long)i * j.Blocks * Block;
        var xs = j.Xs + (long)i * j.Blocks;
        var unpacked = stackalloc byte[Block];
        var sum = 0f;
        for (int g = 0, b = 0; g < j.Groups; g++)
        {
            var bEnd = g == j.Groups - 1 ? j.Blocks : Math.Min(j.Blocks, b + j.BlocksPerGroup);
            var zero = Vector128.Create((short)(j.Zeros is null ? j.Zero : j.Zeros[(long)n * j.Groups + g]));
            var blockSum = 0f;
            for (; b < bEnd; b++)
            {
                byte* u;
                if (j.Bits == 8) u = row + b * Block;
                else
                {
                    var packed = row + b * (Block / 2);
                    for (var t = 0; t < 16; t++) { unpacked[t] = (byte)(packed[t] & 15); unpacked[t + 16] = (byte)(packed[t] >> 4); }
                    u = unpacked;
                }
                var dot = Vector128<int>.Zero;
                for (var h = 0; h < Block; h += 16)
                {
                    var (ul, uh) = Vector128.Widen(Vector128.Load(u + h));
                    var (xl, xh) = Vector128.Widen(Vector128.Load(xq + b * Block + h));
                    var pl = (ul.AsInt16() - zero) * xl;
                    var ph = (uh.AsInt16() - zero) * xh;
                    var (p0, p1) = Vector128.Widen(pl);
                    var (p2, p3) = Vector128.Widen(ph);
                    dot += p0 + p1 + p2 + p3;
                }
                blockSum += Vector128.Sum(dot) * xs[b];
            }
            sum += blockSum * rowScales[g];
        }
        return sum;
    }

    /// <summary>8-bit codes (minus the zero, as i16) times int16 activations, two products summed per i32 lane (vpmaddwd).</summary>
    private static float OneRow16(ref Job j, int n, int i, float* rowScales)
    {
        var row = j.Codes + (long)n * j.RowBytes;
        var xq = j.Xq16 + (long)i * j.Blocks * Block;
        var xs = j.Xs + (long)i * j.Blocks;
        var acc = Vector256<float>.Zero;
        for (int g = 0, b = 0; g < j.Groups; g++)
        {
            var bEnd = g == j.Groups - 1 ? j.Blocks : Math.Min(j.Blocks, b + j.BlocksPerGroup);
            var zero = Vector256.Create((short)(j.Zeros is null ? j.Zero : j.Zeros[(long)n * j.Groups + g]));
            var scale = rowScales[g];
            for (; b < bEnd; b++)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(row + b * Block));
                var d = Avx2.MultiplyAddAdjacent(lo.AsInt16() - zero, Vector256.Load(xq + b * Block))
                    + Avx2.MultiplyAddAdjacent(hi.AsInt16() - zero, Vector256.Load(xq + b * Block + 16));
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(d), Vector256.Create(xs[b] * scale), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    /// <summary>Four output channels of 8-bit codes, one 32-block per 512-bit step (codes widened to i16, minus the zero, vpmaddwd).</summary>
    private static void FourRows16x512(ref Job j, int n, int i, float* rowScales)
    {
        var rb = j.RowBytes;
        var r0 = j.Codes + (long)n * rb;
        var xq = j.Xq16 + (long)i * j.Blocks * Block;
        var xs = j.Xs + (long)i * j.Blocks;
        var groups = j.Groups;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        var symmetric = Vector512.Create((short)j.Zero);
        for (int g = 0, b = 0; g < groups; g++)
        {
            var bEnd = g == groups - 1 ? j.Blocks : Math.Min(j.Blocks, b + j.BlocksPerGroup);
            float s0 = rowScales[g], s1 = rowScales[groups + g], s2 = rowScales[2 * groups + g], s3 = rowScales[3 * groups + g];
            Vector512<short> z0 = symmetric, z1 = symmetric, z2 = symmetric, z3 = symmetric;
            if (j.Zeros is not null)
            {
                var zr = j.Zeros + (long)n * groups + g;
                z0 = Vector512.Create((short)zr[0]); z1 = Vector512.Create((short)zr[groups]);
                z2 = Vector512.Create((short)zr[2 * groups]); z3 = Vector512.Create((short)zr[3 * groups]);
            }
            for (; b < bEnd; b++)
            {
                var x = Vector512.Load(xq + b * Block);
                var sx = xs[b];
                var ahead = r0 + 8 * rb + b * Block;
                Sse.Prefetch0(ahead);
                Sse.Prefetch0(ahead + rb);
                Sse.Prefetch0(ahead + 2 * rb);
                Sse.Prefetch0(ahead + 3 * rb);
                var d0 = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(r0 + b * Block)) - z0, x);
                var d1 = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(r0 + rb + b * Block)) - z1, x);
                var d2 = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(r0 + 2 * rb + b * Block)) - z2, x);
                var d3 = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(r0 + 3 * rb + b * Block)) - z3, x);
                a0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d0), Vector512.Create(sx * s0), a0);
                a1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d1), Vector512.Create(sx * s1), a1);
                a2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d2), Vector512.Create(sx * s2), a2);
                a3 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d3), Vector512.Create(sx * s3), a3);
            }
        }
        StoreFour(ref j, n, i, Sum4(a0, a1, a2, a3));
    }

    /// <summary>The same on portable 128-bit vectors, products in i32.</summary>
    private static float OneRow16Portable(ref Job j, int n, int i, float* rowScales)
    {
        var row = j.Codes + (long)n * j.RowBytes;
        var xq = j.Xq16 + (long)i * j.Blocks * Block;
        var xs = j.Xs + (long)i * j.Blocks;
        var sum = 0f;
        for (int g = 0, b = 0; g < j.Groups; g++)
        {
            var bEnd = g == j.Groups - 1 ? j.Blocks : Math.Min(j.Blocks, b + j.BlocksPerGroup);
            var zero = Vector128.Create(j.Zeros is null ? j.Zero : j.Zeros[(long)n * j.Groups + g]);
            var blockSum = 0f;
            for (; b < bEnd; b++)
            {
                var dot = Vector128<int>.Zero;
                for (var h = 0; h < Block; h += 8)
                {
                    var (u0, u1) = Vector128.Widen(Vector128.WidenLower(Vector128.CreateScalar(*(ulong*)(row + b * Block + h)).AsByte()));
                    var (x0, x1) = Vector128.Widen(Vector128.Load(xq + b * Block + h));
                    dot += (u0.AsInt32() - zero) * x0 + (u1.AsInt32() - zero) * x1;
                }
                blockSum += Vector128.Sum(dot) * xs[b];
            }
            sum += blockSum * rowScales[g];
        }
        return sum;
    }

    /// <summary>
    /// x as the kernels see it for weights of <paramref name="weightBits"/> bits: each 32-block rounded to int8 codes
    /// (int16 for 8-bit weights) and scaled back (for tests and error analysis).
    /// </summary>
    public static float[] RoundActivations(ReadOnlySpan<float> x, int columns, int weightBits = 4, int activationBits = 0, float[]? activationScales = null)
    {
        var rows = x.Length / columns;
        var blocks = (columns + Block - 1) / Block;
        var q = new sbyte[blocks * Block];
        var q16 = new short[blocks * Block];
        var s = new float[blocks];
        var lanes = new int[blocks * 8];
        var result = new float[x.Length];
        fixed (float* px = x)
        fixed (sbyte* pq = q)
        fixed (short* pq16 = q16)
        fixed (float* ps = s)
        fixed (int* pl = lanes)
        fixed (float* pstatic = activationScales)
        {
            for (var r = 0; r < rows; r++)
            {
                if (weightBits == 8) QuantizeRow16(px + (long)r * columns, columns, blocks, pq16, ps, activationBits == 8 ? 127f : 32767f, pstatic);
                else QuantizeRow(px + (long)r * columns, columns, blocks, pq, ps, pl, 0, false);
                for (var k = 0; k < columns; k++) result[r * columns + k] = (weightBits == 8 ? q16[k] : q[k]) * s[k / Block];
            }
        }
        return result;
    }
}
