using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kiln.Runtime.Weights;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// y = x·Wᵀ for a sparse W in bitmask panels (<see cref="SparseLayout"/>: f32 values, or int8 codes with scales).
/// Decoding (a few rows of x) streams each panel once: per input k, one mask splits into two 16-bit halves, AVX-512
/// expands the packed values under each half into a vector and one FMA per half adds x[k]·W[k, panel] into 32
/// accumulators, so the bytes read are the kept values plus one bit per weight. Prefill (many rows) expands each panel 256 inputs at a time into the
/// dense GEMM's packed-panel form and runs its micro-kernel over every row: the expansion is read once per 128 rows.
/// Without AVX-512 (or <c>portable: true</c>) a scalar loop walks the mask bits.
/// </summary>
public static unsafe class SparseMatMul
{
    private const int Panel = SparseLayout.Panel;

    // Values ahead of the one being read that the loops prefetch: a pruned weight stream advances about half a cache
    // line per input, too slowly for the hardware prefetcher to run far enough ahead on its own (measured: 1.3× → 1.9×
    // dense for a 50 % sparse matrix beyond L3).
    private const int PrefetchDistance = 1024;

    /// <summary>
    /// y[m × Rows] (+)= x[m × Columns] · Wᵀ. Masks, values and panel starts are trusted to agree
    /// (<see cref="SparseWeights.Check"/>; planned code reads them from a hashed blob).
    /// </summary>
    public static void Multiply(ReadOnlySpan<float> x, int m, SparseLayout l, ReadOnlySpan<uint> masks, ReadOnlySpan<float> values, ReadOnlySpan<int> starts,
        Span<float> y, bool accumulate, bool portable = false)
    {
        if (l.Bits != 32) throw new KernelException($"f32 values given for a sparse {l.Name} matrix");
        fixed (float* pv = values) Multiply(x, m, l, masks, pv, values.Length, starts, default, y, accumulate, portable);
    }

    /// <summary>As above for int8 codes (<see cref="SparseLayout.Bits"/> 8) and their scales [panels, groups, 32].</summary>
    public static void Multiply(ReadOnlySpan<float> x, int m, SparseLayout l, ReadOnlySpan<uint> masks, ReadOnlySpan<sbyte> codes, ReadOnlySpan<int> starts,
        ReadOnlySpan<float> scales, Span<float> y, bool accumulate, bool portable = false)
    {
        if (l.Bits != 8 || scales.Length != l.ScaleCount) throw new KernelException($"int8 codes and {scales.Length} scales given for a sparse {l.Name} matrix ({l.ScaleCount} scales)");
        fixed (sbyte* pc = codes) Multiply(x, m, l, masks, pc, codes.Length, starts, scales, y, accumulate, portable);
    }

    private static void Multiply(ReadOnlySpan<float> x, int m, SparseLayout l, ReadOnlySpan<uint> masks, void* values, int valueCount, ReadOnlySpan<int> starts,
        ReadOnlySpan<float> scales, Span<float> y, bool accumulate, bool portable)
    {
        if (x.Length < (long)m * l.Columns || y.Length < (long)m * l.Rows)
            throw new KernelException($"a sparse {l.Rows}×{l.Columns} product of {m} rows needs x of {(long)m * l.Columns} and y of {(long)m * l.Rows}; got {x.Length} and {y.Length}");
        if (masks.Length != l.MaskCount || starts.Length != l.Panels + 1 || valueCount < starts[^1] + SparseLayout.Padding)
            throw new KernelException($"a sparse {l.Rows}×{l.Columns} matrix needs {l.MaskCount} masks, {l.Panels + 1} panel starts and {SparseLayout.Padding} padding values; got {masks.Length}, {starts.Length} and {valueCount} values");
        if (m == 0) return;
        fixed (float* px = x)
        fixed (uint* pm = masks)
        fixed (int* ps = starts)
        fixed (float* pscales = scales)
        fixed (float* py = y)
        {
            var job = new Job
            {
                X = px, Masks = pm, Values = (float*)values, Codes = (sbyte*)values, Scales = pscales, Starts = ps, Y = py,
                M = m, Rows = l.Rows, Columns = l.Columns, Group = l.Group, Int8 = l.Bits == 8, Accumulate = accumulate,
            };
            var panels = l.Panels;
            var threads = MatMul.InsideParallelBatch ? 1 : Parallelism.Threads;
            if (portable || !Avx512F.IsSupported)
            {
                job.Chunk = (panels + threads - 1) / threads;
                WorkerTeam.For(Math.Min(threads, panels), threads, &PortableChunk, &job);
            }
            else if (m <= MatMul.GemvMaxRows)
            {
                job.Chunk = (panels + threads - 1) / threads;
                WorkerTeam.For(Math.Min(threads, panels), threads, &DecodeChunk, &job);
            }
            else
            {
                job.RowBlocks = (m + MatMul.RowBlock - 1) / MatMul.RowBlock;
                WorkerTeam.For(job.RowBlocks * ((panels + TilePanels - 1) / TilePanels), threads, &PrefillTile, &job);
            }
        }
    }

    private struct Job
    {
        public float* X, Values, Scales, Y;
        public sbyte* Codes;
        public uint* Masks;
        public int* Starts;
        public int M, Rows, Columns, Group, Chunk, RowBlocks;
        public bool Int8, Accumulate;

        /// <summary>The scale vectors of panel p: [groups, 32].</summary>
        public readonly float* PanelScales(int p) => Scales + (long)p * ((Columns + Group - 1) / Group) * Panel;
    }

    private static void DecodeChunk(void* state, int t)
    {
        ref var j = ref *(Job*)state;
        var p0 = t * j.Chunk;
        var p1 = Math.Min((j.Rows + Panel - 1) / Panel, p0 + j.Chunk);
        var tail = stackalloc float[Panel];
        for (var i = 0; i < j.M; i++)
            for (var p = p0; p < p1; p++)
            {
                var (lo, hi) = j.Int8
                    ? DecodePanel<sbyte, Int8Codes>(j.X + (long)i * j.Columns, j.Masks + (long)p * j.Columns, j.Codes + j.Starts[p], j.PanelScales(p), j.Columns, j.Group)
                    : DecodePanel<float, F32Values>(j.X + (long)i * j.Columns, j.Masks + (long)p * j.Columns, j.Values + j.Starts[p], null, j.Columns, j.Columns);
                var y = j.Y + (long)i * j.Rows + p * Panel;
                var width = Math.Min(Panel, j.Rows - p * Panel);
                if (width == Panel)
                {
                    (j.Accumulate ? Vector512.Load(y) + lo : lo).Store(y);
                    (j.Accumulate ? Vector512.Load(y + 16) + hi : hi).Store(y + 16);
                    continue;
                }
                lo.Store(tail);
                hi.Store(tail + 16);
                for (var c = 0; c < width; c++) y[c] = j.Accumulate ? y[c] + tail[c] : tail[c];
            }
    }

    /// <summary>How a panel's packed values become f32 lanes: f32 values as they are, int8 codes widened.</summary>
    private interface IPanelValues<T> where T : unmanaged
    {
        /// <summary>16 values from <paramref name="at"/> as f32 (the format pads the values, so 16 can always be read).</summary>
        static abstract Vector512<float> Load16(T* at);
    }

    private readonly struct F32Values : IPanelValues<float>
    {
        public static Vector512<float> Load16(float* at) => Vector512.Load(at);
    }

    private readonly struct Int8Codes : IPanelValues<sbyte>
    {
        public static Vector512<float> Load16(sbyte* at) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(at)));
    }

    /// <summary>
    /// Shifting a broadcast mask left by 31 − lane (by 15 − lane for the high half) puts each lane's bit in its sign bit,
    /// which is what the expand's mask reads: three instructions from a u32 to two vector masks.
    /// </summary>
    private static Vector512<uint> ShiftLo => Vector512.Create(31u, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16);

    /// <summary>The 32 weights of input k of a panel (mask <paramref name="m"/>, values from <paramref name="v"/>) as two f32 vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float> Lo, Vector512<float> Hi) Weights<T, TValues>(uint m, T* v, Vector512<uint> shiftLo, Vector512<uint> shiftHi)
        where T : unmanaged where TValues : IPanelValues<T>
    {
        var b = Vector512.Create(m);
        return (Avx512F.Expand(Vector512<float>.Zero, Avx512F.ShiftLeftLogicalVariable(b, shiftLo).AsSingle(), TValues.Load16(v)),
            Avx512F.Expand(Vector512<float>.Zero, Avx512F.ShiftLeftLogicalVariable(b, shiftHi).AsSingle(), TValues.Load16(v + BitOperations.PopCount(m & 0xFFFF))));
    }

    /// <summary>
    /// One panel's 32 outputs for one row x: per group of inputs, Σₖ x[k]·W[k, panel], two inputs per step in separate
    /// chains, times the group's 32 scales (int8 codes) or as they are (f32 values: <paramref name="scales"/> null, one group).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (Vector512<float> Lo, Vector512<float> Hi) DecodePanel<T, TValues>(float* x, uint* masks, T* v, float* scales, int k, int group)
        where T : unmanaged where TValues : IPanelValues<T>
    {
        var shiftLo = ShiftLo;
        var shiftHi = shiftLo - Vector512.Create(16u);
        Vector512<float> t0 = default, t1 = default;
        for (var k0 = 0; k0 < k; k0 += group, scales += Panel)
        {
            var k1 = Math.Min(k, k0 + group);
            Vector512<float> e0 = default, e1 = default, o0 = default, o1 = default;
            var p = k0;
            for (; p + 2 <= k1; p += 2)
            {
                uint m0 = masks[p], m1 = masks[p + 1];
                Sse.Prefetch0((byte*)v + PrefetchDistance * sizeof(T));
                Sse.Prefetch0((byte*)v + (PrefetchDistance + 16) * sizeof(T));
                var (w00, w01) = Weights<T, TValues>(m0, v, shiftLo, shiftHi);
                v += BitOperations.PopCount(m0);
                var x0 = Vector512.Create(x[p]);
                e0 = Avx512F.FusedMultiplyAdd(x0, w00, e0);
                e1 = Avx512F.FusedMultiplyAdd(x0, w01, e1);
                var (w10, w11) = Weights<T, TValues>(m1, v, shiftLo, shiftHi);
                v += BitOperations.PopCount(m1);
                var x1 = Vector512.Create(x[p + 1]);
                o0 = Avx512F.FusedMultiplyAdd(x1, w10, o0);
                o1 = Avx512F.FusedMultiplyAdd(x1, w11, o1);
            }
            if (p < k1)
            {
                var (w00, w01) = Weights<T, TValues>(masks[p], v, shiftLo, shiftHi);
                v += BitOperations.PopCount(masks[p]);
                var x0 = Vector512.Create(x[p]);
                e0 = Avx512F.FusedMultiplyAdd(x0, w00, e0);
                e1 = Avx512F.FusedMultiplyAdd(x0, w01, e1);
            }
            if (scales is null) return (e0 + o0, e1 + o1);
            t0 = Avx512F.FusedMultiplyAdd(e0 + o0, Vector512.Load(scales), t0);
            t1 = Avx512F.FusedMultiplyAdd(e1 + o1, Vector512.Load(scales + 16), t1);
        }
        return (t0, t1);
    }

    // Panels per prefill tile: each 256-input slice of the rows is used on this many panels while it is in cache.
    private const int TilePanels = 4;

    /// <summary>One tile of the prefill: a block of up to 128 rows against four panels, 256 inputs at a time.</summary>
    [SkipLocalsInit] // its scratch (41 KB) is written before it is read
    private static void PrefillTile(void* state, int t)
    {
        ref var j = ref *(Job*)state;
        var rowBlock = t % j.RowBlocks;
        var p0 = t / j.RowBlocks * TilePanels;
        var p1 = Math.Min((j.Rows + Panel - 1) / Panel, p0 + TilePanels);
        var i0 = rowBlock * MatMul.RowBlock;
        var rows = Math.Min(j.M, i0 + MatMul.RowBlock) - i0;
        // The micro-kernel loads the expanded panel 64 bytes at a time: aligned, no load splits a cache line.
        float* scratch = stackalloc float[MatMul.Kc * Panel + 16];
        var expanded = (float*)(((nint)scratch + 63) & ~(nint)63);
        var tmp = stackalloc float[8 * Panel];
        var edgeRows = stackalloc float[8 * MatMul.Kc];
        var next = stackalloc long[TilePanels];
        for (var p = p0; p < p1; p++) next[p - p0] = j.Starts[p];
        for (var k0 = 0; k0 < j.Columns; k0 += MatMul.Kc)
        {
            var kc = Math.Min(MatMul.Kc, j.Columns - k0);
            for (var p = p0; p < p1; p++)
            {
                next[p - p0] = j.Int8
                    ? Expand<sbyte, Int8Codes>(j.Masks + (long)p * j.Columns + k0, j.Codes + next[p - p0], kc, j.PanelScales(p), k0, j.Group, expanded) - j.Codes
                    : Expand<float, F32Values>(j.Masks + (long)p * j.Columns + k0, j.Values + next[p - p0], kc, null, k0, j.Columns, expanded) - j.Values;
                var j0 = p * Panel;
                MatMul.PanelRows(j.X + (long)i0 * j.Columns + k0, j.Columns, rows, expanded, Panel, kc, j.Y + (long)i0 * j.Rows + j0, j.Rows,
                    Math.Min(Panel, j.Rows - j0), j.Accumulate || k0 > 0, tmp, edgeRows);
            }
        }
    }

    /// <summary>
    /// Expands <paramref name="kc"/> inputs (from input <paramref name="k0"/>) of a panel into the dense packed form
    /// [kc × 32], int8 codes times their group's scales; returns where the next input's values start.
    /// </summary>
    private static T* Expand<T, TValues>(uint* masks, T* v, int kc, float* scales, int k0, int group, float* dense)
        where T : unmanaged where TValues : IPanelValues<T>
    {
        var shiftLo = ShiftLo;
        var shiftHi = shiftLo - Vector512.Create(16u);
        for (var p = 0; p < kc; p++, dense += Panel)
        {
            var m = masks[p];
            Sse.Prefetch0((byte*)v + PrefetchDistance * sizeof(T));
            var (lo, hi) = Weights<T, TValues>(m, v, shiftLo, shiftHi);
            v += BitOperations.PopCount(m);
            if (scales is not null)
            {
                var s = scales + (k0 + p) / group * Panel;
                lo *= Vector512.Load(s);
                hi *= Vector512.Load(s + 16);
            }
            lo.Store(dense);
            hi.Store(dense + 16);
        }
        return v;
    }

    /// <summary>The portable path: every row against a chunk of panels, one kept weight at a time.</summary>
    private static void PortableChunk(void* state, int t)
    {
        ref var j = ref *(Job*)state;
        var p0 = t * j.Chunk;
        var p1 = Math.Min((j.Rows + Panel - 1) / Panel, p0 + j.Chunk);
        var sums = stackalloc float[Panel];
        for (var i = 0; i < j.M; i++)
        {
            var x = j.X + (long)i * j.Columns;
            for (var p = p0; p < p1; p++)
            {
                new Span<float>(sums, Panel).Clear();
                var masks = j.Masks + (long)p * j.Columns;
                if (j.Int8)
                {
                    var c = j.Codes + j.Starts[p];
                    var scales = j.PanelScales(p);
                    for (var k = 0; k < j.Columns; k++)
                    {
                        var xk = x[k];
                        var s = scales + k / j.Group * Panel;
                        for (var mask = masks[k]; mask != 0; mask &= mask - 1)
                        {
                            var lane = BitOperations.TrailingZeroCount(mask);
                            sums[lane] += xk * (s[lane] * *c++);
                        }
                    }
                }
                else
                {
                    var v = j.Values + j.Starts[p];
                    for (var k = 0; k < j.Columns; k++)
                    {
                        var xk = x[k];
                        for (var mask = masks[k]; mask != 0; mask &= mask - 1) sums[BitOperations.TrailingZeroCount(mask)] += xk * *v++;
                    }
                }
                var y = j.Y + (long)i * j.Rows + p * Panel;
                var width = Math.Min(Panel, j.Rows - p * Panel);
                for (var c = 0; c < width; c++) y[c] = j.Accumulate ? y[c] + sums[c] : sums[c];
            }
        }
    }
}
