using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// f32 matrix multiply: C = A·B (+ C). Written by hand rather than with TensorPrimitives, which has dot products but
/// no GEMM: B is packed into panels of 32 columns (zero-padded), and an 8×32 register-blocked micro-kernel
/// (16 AVX-512 accumulators, FMA) sweeps K in blocks that stay in L1/L2. Work is split into row-block × panel-group
/// tiles run in parallel. Without AVX-512 the same structure runs on 256-bit vectors (8×16 tiles).
/// </summary>
public static unsafe class MatMul
{
    internal const int Kc = 256;

    // Packed B panels of persistent (weight) tensors, kept as long as the tensor object lives.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Tensor, System.Collections.Concurrent.ConcurrentDictionary<(long, bool), float[]>> PackCache = new();


    private static int Nr => Avx512F.IsSupported ? 32 : 16;

    private const int Mr = 8;

    // Rows of A per tile: every row group of a tile reuses the B slice the first one brought in, so the cost of
    // fetching a model weight from memory is spread over this many rows (128: a prefill's whole prompt).
    internal const int RowBlock = 128;

    // How far ahead (floats) the micro-kernel prefetches its B panel: a weight meets the first row group of a tile
    // straight from memory, faster than the hardware prefetcher alone brings it in.
    private const int PrefetchDistance = 512;

    /// <summary>C[M×N] (+)= op(A)[M×K] · op(B)[K×N]; leading dims are the row strides of the stored matrices.</summary>
    public static void Gemm(ReadOnlySpan<float> a, int lda, bool transA, ReadOnlySpan<float> b, int ldb, bool transB,
        Span<float> c, int ldc, int m, int n, int k, bool accumulate) => Gemm(a, lda, transA, b, ldb, transB, c, ldc, m, n, k, accumulate, null, 0);

    /// <summary>As above; when <paramref name="weights"/> is a persistent tensor holding B, its packed form is cached.</summary>
    public static void Gemm(ReadOnlySpan<float> a, int lda, bool transA, ReadOnlySpan<float> b, int ldb, bool transB,
        Span<float> c, int ldc, int m, int n, int k, bool accumulate, Tensor? weights, long weightsOffset)
    {
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) for (var i = 0; i < m; i++) c.Slice(i * ldc, n).Clear();
            return;
        }
        if (m <= GemvMaxRows && !transA && (long)n * k >= 1 << 14)
        {
            // A few rows (decoding one token): B is streamed once. A model weight stored [K×N] is read from its packed
            // panels (the same copy prefill's GEMM uses), where each panel is one sequential run of memory; read in
            // place, a column strip would jump a row's length every few cache lines, which the hardware prefetcher
            // follows poorly.
            if (weights is { Persistent: true } && !transB && Nr == 32 && Vector512.IsHardwareAccelerated)
                GemvPacked(a, lda, Packed(b, ldb, transB, k, n, Nr, weights, weightsOffset), c, ldc, m, n, k, accumulate);
            else
                Gemv(a, lda, b, ldb, transB, c, ldc, m, n, k, accumulate);
            return;
        }
        float[]? aT = null;
        if (transA)
        {
            // Rare (Gemm transA=1): materialize A row-major so the micro-kernel reads rows.
            aT = new float[m * k];
            for (var i = 0; i < m; i++)
                for (var p = 0; p < k; p++) aT[i * k + p] = a[p * lda + i];
            a = aT;
            lda = k;
        }
        var nr = Nr;
        var panels = (n + nr - 1) / nr;
        float[] packed;
        float[]? rented = null;
        if (weights is { Persistent: true })
            packed = Packed(b, ldb, transB, k, n, nr, weights, weightsOffset);
        else
        {
            rented = System.Buffers.ArrayPool<float>.Shared.Rent(panels * nr * k);
            packed = rented;
            PackB(b, ldb, transB, k, n, nr, packed);
        }
        try
        {
            Run(a, lda, packed, c, ldc, m, n, k, nr, panels, accumulate);
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>The packed panels of a persistent weight, packed on first use and kept for the weight's lifetime.</summary>
    private static float[] Packed(ReadOnlySpan<float> b, int ldb, bool transB, int k, int n, int nr, Tensor weights, long weightsOffset)
    {
        var perTensor = PackCache.GetOrCreateValue(weights);
        if (perTensor.TryGetValue((weightsOffset, transB), out var packed)) return packed;
        lock (perTensor)
        {
            // Packed once even when two sessions on two threads first meet the weight together.
            if (!perTensor.TryGetValue((weightsOffset, transB), out packed))
            {
                packed = new float[(long)((n + nr - 1) / nr) * nr * k];
                PackB(b, ldb, transB, k, n, nr, packed);
                perTensor[(weightsOffset, transB)] = packed;
            }
            return packed;
        }
    }

    /// <summary>Rows up to which <see cref="Gemm"/> reads B once as a matrix-vector product instead of through the blocked GEMM.</summary>
    public const int GemvMaxRows = 4;

    /// <summary>
    /// C (+)= A·op(B) for a few rows of A: B is read once, in its stored layout, split by columns across threads.
    /// B as [K×N]: each row of B is added into C scaled by A's element (contiguous, vectorized); B transposed ([N×K],
    /// a tied embedding as classifier): one dot product per output.
    /// </summary>
    private static void Gemv(ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, bool transB, Span<float> c, int ldc, int m, int n, int k, bool accumulate)
    {
        fixed (float* pa = a)
        fixed (float* pb = b)
        fixed (float* pc = c)
        {
            // Column ranges of at least 64 floats, on every core once B is large enough to be worth it.
            // Waking a second thread costs more than it saves below a few MB of B (one core reads ~35 GB/s).
            var threads = _single || (long)n * k < 1 << 19 ? 1 : Parallelism.Threads;
            threads = Math.Max(1, Math.Min(threads, n / 64));
            var chunk = (n + threads - 1) / threads;
            chunk = (chunk + 15) / 16 * 16;
            var job = new GemvJob { A = pa, B = pb, C = pc, Lda = lda, Ldb = ldb, Ldc = ldc, M = m, N = n, K = k, Chunk = chunk, TransB = transB, Accumulate = accumulate };
            WorkerTeam.For(threads, threads, &GemvColumns, &job);
        }
    }

    /// <summary>C (+)= A·B for a few rows of A, B given as the GEMM's packed panels (<see cref="Nr"/> = 32 columns × K, contiguous).</summary>
    private static void GemvPacked(ReadOnlySpan<float> a, int lda, float[] packed, Span<float> c, int ldc, int m, int n, int k, bool accumulate)
    {
        fixed (float* pa = a)
        fixed (float* pb = packed)
        fixed (float* pc = c)
        {
            var panels = (n + 31) / 32;
            // Every core, even for a 288×288 weight: a decode step's layers come from L3 at tens of GB/s per core, and
            // waking the team (well under a microsecond) is cheaper than leaving the other core idle for several.
            var threads = _single ? 1 : Math.Min(Parallelism.Threads, panels);
            var chunk = (panels + threads - 1) / threads;
            var job = new GemvJob { A = pa, B = pb, C = pc, Lda = lda, Ldc = ldc, M = m, N = n, K = k, Chunk = chunk, Accumulate = accumulate };
            WorkerTeam.For(threads, threads, &GemvPanels, &job);
        }
    }

    private static void GemvPanels(void* state, int t)
    {
        ref var j = ref *(GemvJob*)state;
        var panels = (j.N + 31) / 32;
        var p0 = t * j.Chunk;
        var p1 = Math.Min(panels, p0 + j.Chunk);
        var k = j.K;
        var tail = stackalloc float[32];
        for (var i = 0; i < j.M; i++)
        {
            var x = j.A + (long)i * j.Lda;
            var y = j.C + (long)i * j.Ldc;
            for (var panel = p0; panel < p1; panel++)
            {
                var b = j.B + (long)panel * 32 * k;
                // Even and odd rows of the panel in separate chains: four independent FMAs per two rows.
                Vector512<float> e0 = default, e1 = default, o0 = default, o1 = default;
                var p = 0;
                for (; p + 2 <= k; p += 2, b += 64)
                {
                    var xe = Vector512.Create(x[p]);
                    var xo = Vector512.Create(x[p + 1]);
                    e0 = Vector512.FusedMultiplyAdd(Vector512.Load(b), xe, e0);
                    e1 = Vector512.FusedMultiplyAdd(Vector512.Load(b + 16), xe, e1);
                    o0 = Vector512.FusedMultiplyAdd(Vector512.Load(b + 32), xo, o0);
                    o1 = Vector512.FusedMultiplyAdd(Vector512.Load(b + 48), xo, o1);
                }
                if (p < k)
                {
                    var xe = Vector512.Create(x[p]);
                    e0 = Vector512.FusedMultiplyAdd(Vector512.Load(b), xe, e0);
                    e1 = Vector512.FusedMultiplyAdd(Vector512.Load(b + 16), xe, e1);
                }
                e0 += o0;
                e1 += o1;
                var j0 = panel * 32;
                if (j0 + 32 <= j.N)
                {
                    Store(y + j0, e0, j.Accumulate);
                    Store(y + j0 + 16, e1, j.Accumulate);
                }
                else
                {
                    // The last panel is zero-padded past N: keep only its real columns.
                    e0.Store(tail);
                    e1.Store(tail + 16);
                    for (var c = 0; c < j.N - j0; c++) y[j0 + c] = j.Accumulate ? y[j0 + c] + tail[c] : tail[c];
                }
            }
        }
    }

    private struct GemvJob
    {
        public float* A, B, C;
        public int Lda, Ldb, Ldc, M, N, K, Chunk;
        public bool TransB, Accumulate;
    }

    private static void GemvColumns(void* state, int t)
    {
        ref var j = ref *(GemvJob*)state;
        var j0 = t * j.Chunk;
        var j1 = Math.Min(j.N, j0 + j.Chunk);
        if (j0 >= j1) return;
        for (var i = 0; i < j.M; i++)
        {
            var x = j.A + (long)i * j.Lda;
            var y = j.C + (long)i * j.Ldc;
            if (j.TransB) GemvTransposedRows(x, j.B, j.Ldb, y, j0, j1, j.K, j.Accumulate);
            else GemvRows(x, j.B, j.Ldb, y, j0, j1, j.K, j.Accumulate);
        }
    }

    /// <summary>y[j0..j1) (+)= x·B[:, j0..j1) for row-major B [k×n]: 128 columns at a time held in 8 AVX-512 accumulators while k streams.</summary>
    private static void GemvRows(float* x, float* b, int ldb, float* y, int j0, int j1, int k, bool accumulate)
    {
        var j = j0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; j + 128 <= j1; j += 128)
            {
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                for (var p = 0; p < k; p++)
                {
                    var xp = Vector512.Create(x[p]);
                    var row = b + (long)p * ldb + j;
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Load(row), xp, a0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 16), xp, a1);
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 32), xp, a2);
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 48), xp, a3);
                    a4 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 64), xp, a4);
                    a5 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 80), xp, a5);
                    a6 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 96), xp, a6);
                    a7 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 112), xp, a7);
                }
                Store(y + j, a0, accumulate); Store(y + j + 16, a1, accumulate); Store(y + j + 32, a2, accumulate); Store(y + j + 48, a3, accumulate);
                Store(y + j + 64, a4, accumulate); Store(y + j + 80, a5, accumulate); Store(y + j + 96, a6, accumulate); Store(y + j + 112, a7, accumulate);
            }
            for (; j + 16 <= j1; j += 16)
            {
                Vector512<float> acc = default;
                for (var p = 0; p < k; p++) acc = Vector512.FusedMultiplyAdd(Vector512.Load(b + (long)p * ldb + j), Vector512.Create(x[p]), acc);
                Store(y + j, acc, accumulate);
            }
        }
        for (; j < j1; j++)
        {
            var sum = 0f;
            for (var p = 0; p < k; p++) sum += x[p] * b[(long)p * ldb + j];
            y[j] = accumulate ? y[j] + sum : sum;
        }
    }

    private static void Store(float* y, Vector512<float> v, bool accumulate) => (accumulate ? Vector512.Load(y) + v : v).Store(y);

    /// <summary>y[j] (+)= x·B[j, :] for j in [j0, j1) with B stored [n×k] (a transposed weight): four rows at a time, each read to its end.</summary>
    private static void GemvTransposedRows(float* x, float* b, int ldb, float* y, int j0, int j1, int k, bool accumulate)
    {
        var j = j0;
        var kv = Vector512.IsHardwareAccelerated ? k / 16 * 16 : 0;
        for (; j + 4 <= j1 && kv > 0; j += 4)
        {
            float* r0 = b + (long)j * ldb, r1 = r0 + ldb, r2 = r1 + ldb, r3 = r2 + ldb;
            // Each row is read to its end before the next: one sequential stream the hardware prefetcher follows
            // (interleaving four short rows line by line defeats it). Two chains per row hide the FMA latency.
            var s0 = RowDot(r0, x, kv);
            var s1 = RowDot(r1, x, kv);
            var s2 = RowDot(r2, x, kv);
            var s3 = RowDot(r3, x, kv);
            float d0 = Vector512.Sum(s0), d1 = Vector512.Sum(s1), d2 = Vector512.Sum(s2), d3 = Vector512.Sum(s3);
            for (var p = kv; p < k; p++) { d0 += r0[p] * x[p]; d1 += r1[p] * x[p]; d2 += r2[p] * x[p]; d3 += r3[p] * x[p]; }
            if (accumulate) { y[j] += d0; y[j + 1] += d1; y[j + 2] += d2; y[j + 3] += d3; }
            else { y[j] = d0; y[j + 1] = d1; y[j + 2] = d2; y[j + 3] = d3; }
        }
        for (; j < j1; j++)
        {
            var dot = System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(x, k), new ReadOnlySpan<float>(b + (long)j * ldb, k));
            y[j] = accumulate ? y[j] + dot : dot;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RowDot(float* row, float* x, int kv)
    {
        Vector512<float> a = default, b = default;
        var p = 0;
        for (; p + 32 <= kv; p += 32)
        {
            a = Vector512.FusedMultiplyAdd(Vector512.Load(row + p), Vector512.Load(x + p), a);
            b = Vector512.FusedMultiplyAdd(Vector512.Load(row + p + 16), Vector512.Load(x + p + 16), b);
        }
        if (p < kv) a = Vector512.FusedMultiplyAdd(Vector512.Load(row + p), Vector512.Load(x + p), a);
        return a + b;
    }

    private static void Run(ReadOnlySpan<float> a, int lda, float[] packed, Span<float> c, int ldc, int m, int n, int k, int nr, int panels, bool accumulate)
    {
        fixed (float* pa = a)
        fixed (float* pb = packed)
        fixed (float* pc = c)
        {
            var job = new Job(pa, lda, pb, pc, ldc, m, n, k, nr, accumulate);
            var rowBlocks = (m + RowBlock - 1) / RowBlock;
            var panelGroups = (panels + 3) / 4;
            var tiles = rowBlocks * panelGroups;
            var flops = 2.0 * m * n * k;
            var threads = _single || flops < 2e6 ? 1 : Math.Min(Parallelism.Threads, tiles);
            var tiling = new Tiling { Job = &job, RowBlocks = rowBlocks, Panels = panels };
            WorkerTeam.For(tiles, threads, &RunTile, &tiling);
        }
    }

    private struct Tiling
    {
        public Job* Job;
        public int RowBlocks, Panels;
    }

    private static void RunTile(void* state, int t)
    {
        ref var s = ref *(Tiling*)state;
        s.Job->Tile(t % s.RowBlocks, t / s.RowBlocks, s.Panels);
    }

    private static void PackB(ReadOnlySpan<float> b, int ldb, bool transB, int k, int n, int nr, float[] packed)
    {
        var panels = (n + nr - 1) / nr;
        for (var p = 0; p < panels; p++)
        {
            var j0 = p * nr;
            var w = Math.Min(nr, n - j0);
            var dst = packed.AsSpan(p * nr * k, nr * k);
            if (!transB)
            {
                for (var kk = 0; kk < k; kk++)
                {
                    b.Slice(kk * ldb + j0, w).CopyTo(dst.Slice(kk * nr, w));
                    if (w < nr) dst.Slice(kk * nr + w, nr - w).Clear();
                }
            }
            else
            {
                if (w < nr) dst.Clear();
                for (var j = 0; j < w; j++)
                {
                    var row = b.Slice((j0 + j) * ldb, k);
                    for (var kk = 0; kk < k; kk++) dst[kk * nr + j] = row[kk];
                }
            }
        }
    }

    private readonly struct Job(float* a, int lda, float* b, float* c, int ldc, int m, int n, int k, int nr, bool accumulate)
    {
        public void Tile(int rowBlock, int panelGroup, int panels)
        {
            var i0 = rowBlock * RowBlock;
            var i1 = Math.Min(m, i0 + RowBlock);
            var p0 = panelGroup * 4;
            var p1 = Math.Min(panels, p0 + 4);
            var tmp = stackalloc float[Mr * 32];
            var edgeRows = stackalloc float[Mr * Kc];
            for (var k0 = 0; k0 < k; k0 += Kc)
            {
                var kc = Math.Min(Kc, k - k0);
                var acc = accumulate || k0 > 0;
                for (var p = p0; p < p1; p++)
                {
                    var j0 = p * nr;
                    var w = Math.Min(nr, n - j0);
                    var bp = b + (long)p * nr * k + (long)k0 * nr;
                    PanelRows(a + (long)i0 * lda + k0, lda, i1 - i0, bp, nr, kc, c + (long)i0 * ldc + j0, ldc, w, acc, tmp, edgeRows);
                }
            }
        }
    }

    /// <summary>
    /// C[rows × w] (+)= A[rows × kc] · one packed B panel slice [kc × nr] (<paramref name="nr"/> columns, zero-padded
    /// past <paramref name="w"/>): the micro-kernel over groups of <see cref="Mr"/> rows. Edge tiles (the last rows,
    /// the last columns) run the full micro-kernel on zero-padded rows of A into <paramref name="tmp"/> (Mr × 32) and
    /// only the valid part reaches C; <paramref name="edgeRows"/> holds Mr × kc floats. The sparse product's prefill
    /// calls this on panels it expands.
    /// </summary>
    internal static void PanelRows(float* a, int lda, int rows, float* bp, int nr, int kc, float* c, int ldc, int w, bool acc, float* tmp, float* edgeRows)
    {
        for (var i = 0; i < rows; i += Mr)
        {
            var group = Math.Min(Mr, rows - i);
            var ap = a + (long)i * lda;
            var cp = c + (long)i * ldc;
            if (group == Mr && w == nr)
            {
                Kernel(nr, ap, lda, bp, kc, cp, ldc, acc);
                continue;
            }
            var lde = lda;
            if (group < Mr)
            {
                for (var r = 0; r < Mr; r++)
                {
                    var dst = new Span<float>(edgeRows + r * kc, kc);
                    if (r < group) new ReadOnlySpan<float>(ap + (long)r * lda, kc).CopyTo(dst);
                    else dst.Clear();
                }
                ap = edgeRows;
                lde = kc;
            }
            Kernel(nr, ap, lde, bp, kc, tmp, nr, false);
            for (var r = 0; r < group; r++)
            {
                var src = new ReadOnlySpan<float>(tmp + r * nr, w);
                var dst = new Span<float>(cp + (long)r * ldc, w);
                if (acc) System.Numerics.Tensors.TensorPrimitives.Add(dst, src, dst);
                else src.CopyTo(dst);
            }
        }
    }

    private static void Kernel(int nr, float* a, int lda, float* b, int kc, float* c, int ldc, bool acc)
    {
        if (nr == 32) Kernel8x32(a, lda, b, kc, c, ldc, acc);
        else Kernel8x16(a, lda, b, kc, c, ldc, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Kernel8x32(float* a, int lda, float* b, int kc, float* c, int ldc, bool accumulate)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        var a0 = a; var a1 = a + lda; var a2 = a1 + lda; var a3 = a2 + lda;
        var a4 = a3 + lda; var a5 = a4 + lda; var a6 = a5 + lda; var a7 = a6 + lda;
        for (var kk = 0; kk < kc; kk++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            Sse.Prefetch0(b + PrefetchDistance);
            Sse.Prefetch0(b + PrefetchDistance + 16);
            b += 32;
            var x = Vector512.Create(a0[kk]); c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a1[kk]); c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a2[kk]); c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a3[kk]); c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a4[kk]); c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a5[kk]); c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a6[kk]); c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a7[kk]); c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
        }
        Store512(c, accumulate, c00, c01); c += ldc;
        Store512(c, accumulate, c10, c11); c += ldc;
        Store512(c, accumulate, c20, c21); c += ldc;
        Store512(c, accumulate, c30, c31); c += ldc;
        Store512(c, accumulate, c40, c41); c += ldc;
        Store512(c, accumulate, c50, c51); c += ldc;
        Store512(c, accumulate, c60, c61); c += ldc;
        Store512(c, accumulate, c70, c71);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(float* c, bool accumulate, Vector512<float> v0, Vector512<float> v1)
    {
        if (accumulate)
        {
            v0 += Vector512.Load(c);
            v1 += Vector512.Load(c + 16);
        }
        Vector512.Store(v0, c);
        Vector512.Store(v1, c + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel8x16(float* a, int lda, float* b, int kc, float* c, int ldc, bool accumulate)
    {
        Span<Vector256<float>> acc = stackalloc Vector256<float>[16];
        acc.Clear();
        for (var kk = 0; kk < kc; kk++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            b += 16;
            for (var r = 0; r < 8; r++)
            {
                var x = Vector256.Create(a[(long)r * lda + kk]);
                acc[2 * r] = Fma.IsSupported ? Fma.MultiplyAdd(x, b0, acc[2 * r]) : acc[2 * r] + x * b0;
                acc[2 * r + 1] = Fma.IsSupported ? Fma.MultiplyAdd(x, b1, acc[2 * r + 1]) : acc[2 * r + 1] + x * b1;
            }
        }
        for (var r = 0; r < 8; r++)
        {
            var cr = c + (long)r * ldc;
            var v0 = acc[2 * r];
            var v1 = acc[2 * r + 1];
            if (accumulate)
            {
                v0 += Vector256.Load(cr);
                v1 += Vector256.Load(cr + 8);
            }
            Vector256.Store(v0, cr);
            Vector256.Store(v1, cr + 8);
        }
    }

    /// <summary>ONNX MatMul on f32 with NumPy semantics: 1-D operands are promoted, batch dims broadcast.</summary>
    public static Tensor Multiply(Tensor a, Tensor b)
    {
        var aShape = a.Rank == 1 ? new[] { 1, a.Shape[0] } : a.Shape;
        var bShape = b.Rank == 1 ? new[] { b.Shape[0], 1 } : b.Shape;
        if (aShape.Length < 2 || bShape.Length < 2) throw new KernelException($"MatMul needs operands of rank ≥ 1, got {a} and {b}");
        var m = aShape[^2];
        var k = aShape[^1];
        var n = bShape[^1];
        if (bShape[^2] != k) throw new KernelException($"MatMul inner dimensions differ: [{string.Join(", ", a.Shape)}] × [{string.Join(", ", b.Shape)}]");
        var batch = Broadcast.Shape(aShape[..^2], bShape[..^2]);
        var outShape = batch.Concat(new[] { m, n }).ToArray();
        var finalShape = batch.Concat(a.Rank == 1 ? [] : new[] { m }).Concat(b.Rank == 1 ? [] : new[] { n }).ToArray();
        if (a.Type != b.Type) throw new KernelException($"MatMul operand types differ: {a.Type.Name()} and {b.Type.Name()}");
        if (a.Type == DType.F32 && b.Rank == 2 && a.Rank >= 2 && a.Length / Math.Max(1, k) <= GemvMaxRows)
        {
            // A few rows against a 2-D weight (decoding): one call, no batch bookkeeping.
            var rows = (int)(a.Length / Math.Max(1, k));
            var y = Tensor.Uninitialized(DType.F32, finalShape);
            Gemm(a.Span<float>(), k, false, b.Span<float>(), n, false, y.Span<float>(), n, rows, n, k, false, b, 0);
            return y;
        }
        if (a.Type != DType.F32)
        {
            // Other element types: exact generic loops (double accumulation for floats, wrapping for integers).
            return Generic(a, aShape, b, bShape, batch, m, n, k).Reshape(finalShape);
        }
        var r = Tensor.Uninitialized(DType.F32, outShape);
        var batches = (int)Tensor.Count(batch);
        var sa = Broadcast.StridesFor(aShape[..^2], batch);
        var sb = Broadcast.StridesFor(bShape[..^2], batch);
        var aOff = Movement.StridedIndices(batch, sa);
        var bOff = Movement.StridedIndices(batch, sb);
        var am = a.Memory;
        var bm = b.Memory;
        var rm = r.Memory;
        void One(int t)
        {
            var A = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(am.Span).Slice((int)(aOff[t] * m * k), m * k);
            var B = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bm.Span).Slice((int)(bOff[t] * k * n), k * n);
            var C = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(rm.Span).Slice(t * m * n, m * n);
            Gemm(A, k, false, B, n, false, C, n, m, n, k, false, b, bOff[t]);
        }
        // Many small products (attention heads): parallel over the batch when there is enough work to pay for the threads.
        var total = (long)batches * m * n * k;
        var threads = Parallelism.Threads;
        if (batches > 1 && threads > 1 && !_single && (long)m * n * k < 1L << 22 && total >= 1L << 16)
        {
            Parallel.For(0, batches, new ParallelOptions { MaxDegreeOfParallelism = threads }, t => SingleThreaded(() => One(t)));
        }
        else
            for (var t = 0; t < batches; t++) One(t);
        return r.Reshape(finalShape);
    }

    [ThreadStatic] private static bool _single;

    private static void SingleThreaded(Action f)
    {
        _single = true;
        try { f(); }
        finally { _single = false; }
    }

    internal static bool InsideParallelBatch => _single;

    private static Tensor Generic(Tensor a, int[] aShape, Tensor b, int[] bShape, int[] batch, int m, int n, int k)
    {
        var outShape = batch.Concat(new[] { m, n }).ToArray();
        var sa = Broadcast.StridesFor(aShape[..^2], batch);
        var sb = Broadcast.StridesFor(bShape[..^2], batch);
        var aOff = Movement.StridedIndices(batch, sa);
        var bOff = Movement.StridedIndices(batch, sb);
        var isFloat = a.Type.IsFloat();
        var res = new double[Tensor.Count(outShape)];
        var resL = new long[res.Length];
        for (var t = 0; t < aOff.Length; t++)
            for (var i = 0; i < m; i++)
                for (var j = 0; j < n; j++)
                {
                    double s = 0;
                    long si = 0;
                    for (var p = 0; p < k; p++)
                    {
                        var ia = aOff[t] * m * k + i * k + p;
                        var ib = bOff[t] * k * n + p * n + j;
                        if (isFloat) s += a.GetDouble(ia) * b.GetDouble(ib);
                        else si = unchecked(si + a.GetLong(ia) * b.GetLong(ib));
                    }
                    res[(t * m + i) * n + j] = s;
                    resL[(t * m + i) * n + j] = si;
                }
        return isFloat ? Movement.FromDoubles(a.Type, outShape, res) : Cast.To(Tensor.FromArray(DType.I64, outShape, resL), a.Type);
    }
}
