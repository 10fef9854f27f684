using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// 2-D convolution as an implicit GEMM over shifted rows: with the input zero-padded to [C, Hp, Wp] and the output
/// computed on an [OH, Wp] grid (the columns past OW wrap around and are dropped when stored), output pixel
/// q = oy·Wp + ox reads tap (c, ky, kx) at padded offset c·Hp·Wp + ky·dh·Wp + kx·dw + q. So 32 consecutive output
/// pixels of one tap are 32 consecutive floats of the padded input: the GEMM's B panel is read in place, with no
/// im2col matrix and no packing. A 1×1 unpadded stride-1 convolution reads the input itself; a strided one reads a
/// copy split into stride phases, where the same holds.
/// </summary>
public static partial class Convolution
{
    private const int ShiftPanel = 32;
    private const int ShiftRows = 8;

    private static bool ShiftedRowsApply(Window win) => Avx512F.IsSupported && win.Rank == 2;

    private static unsafe void ShiftedRows2D(ReadOnlySpan<float> x, int n, int c, int h, int wd, Tensor w, Tensor? bias, Span<float> y, Window win, int oh, int ow)
    {
        var m = w.Shape[0];
        int kh = win.Kernel[0], kw = win.Kernel[1], dh = win.Dilations[0], dw = win.Dilations[1], sh = win.Strides[0], sw = win.Strides[1];
        int ph = win.PadsBegin[0], pw = win.PadsBegin[1];
        // Strided convolutions read each phase (input rows ≡ py, columns ≡ px modulo the stride) as its own plane:
        // then output (oy, ox) reads tap (ky, kx) at row oy + ky·dh / sh, column ox + kx·dw / sw of phase
        // (ky·dh mod sh, kx·dw mod sw), the same shifted-rows pattern as stride 1.
        var copy = sh != 1 || sw != 1 || ph != 0 || pw != 0 || win.PadsEnd[0] != 0 || win.PadsEnd[1] != 0;
        int hp = h + ph + win.PadsEnd[0], wp = wd + pw + win.PadsEnd[1];
        int hph = (hp + sh - 1) / sh, wph = (wp + sw - 1) / sw;
        long phasePlane = (long)hph * wph, channelPlane = phasePlane * sh * sw;
        var k = c * kh * kw;
        var q = oh * wph;
        var panels = (q + ShiftPanel - 1) / ShiftPanel;
        var rowTiles = (m + ShiftRows - 1) / ShiftRows;
        var cached = !w.Persistent ? null : PackedRowTiles.TryGetValue(w, out var packed) ? packed : PackOnce(w, m, k);
        var aPacked = cached ?? PackRowTiles(w.Span<float>(), m, k, System.Buffers.ArrayPool<float>.Shared.Rent(rowTiles * ShiftRows * k));
        var offsets = System.Buffers.ArrayPool<int>.Shared.Rent(2 * k);
        float[]? xp = null;
        try
        {
            var maxOffset = 0L;
            for (int ch = 0, kk = 0; ch < c; ch++)
                for (var ky = 0; ky < kh; ky++)
                    for (var kx = 0; kx < kw; kx++, kk++)
                    {
                        int ry = ky * dh, rx = kx * dw;
                        var phase = ry % sh * sw + rx % sw;
                        var at = ch * channelPlane + phase * phasePlane + (long)(ry / sh) * wph + rx / sw;
                        offsets[kk] = checked((int)at);
                        offsets[k + kk] = kk * ShiftPanel; // the same taps in a packed tail panel
                        maxOffset = Math.Max(maxOffset, at);
                    }
            // The copy is long enough for every panel's reads, the last one's 31 floats past its start included.
            var copyLength = copy ? checked((int)Math.Max(c * channelPlane, maxOffset + (long)panels * ShiftPanel)) : 0;
            xp = copy ? System.Buffers.ArrayPool<float>.Shared.Rent(copyLength) : null;
            fixed (float* px = x)
            fixed (float* pxp = xp)
            fixed (float* pa = aPacked)
            fixed (int* po = offsets)
            fixed (float* pb = bias is null ? default : bias.Span<float>())
            fixed (float* py = y)
            {
                var job = new ShiftedJob
                {
                    A = pa, Offsets = po, Bias = bias is null ? null : pb, K = k, M = m, Wp = wph, Ow = ow, Q = q, P = oh * ow,
                    Panels = panels, RowTiles = rowTiles, InputLength = copy ? copyLength : (long)c * h * wd, MaxOffset = maxOffset,
                };
                job.PanelGroup = Math.Max(1, Math.Min(4, panels / (4 * Parallelism.Threads)));
                job.RowGroup = 8;
                job.Items = (panels + job.PanelGroup - 1) / job.PanelGroup * ((rowTiles + job.RowGroup - 1) / job.RowGroup);
                var flops = 2.0 * n * m * k * oh * ow;
                var threads = flops >= 4e6 ? Parallelism.Threads : 1;
                for (var b = 0; b < n; b++)
                {
                    var xb = px + (long)b * c * h * wd;
                    if (copy)
                    {
                        new Span<float>(pxp, copyLength).Clear();
                        for (var ch = 0; ch < c; ch++)
                            for (var iy = 0; iy < h; iy++)
                            {
                                var src = new ReadOnlySpan<float>(xb + ((long)ch * h + iy) * wd, wd);
                                var row = pxp + ch * channelPlane + (iy + ph) % sh * sw * phasePlane + (long)((iy + ph) / sh) * wph;
                                if (sw == 1) { src.CopyTo(new Span<float>(row + pw, wd)); continue; }
                                for (var phase = 0; phase < sw; phase++)
                                {
                                    // Input columns xi with (xi + pw) ≡ phase (mod sw) land at (xi + pw) / sw of that phase.
                                    var xi = ((phase - pw) % sw + sw) % sw;
                                    var d = row + phase * phasePlane + (xi + pw) / sw;
                                    for (; xi < wd; xi += sw) *d++ = src[xi];
                                }
                            }
                        job.X = pxp;
                    }
                    else job.X = xb;
                    job.Y = py + (long)b * m * oh * ow;
                    WorkerTeam.For(job.Items, threads, &ShiftedItem, &job);
                }
            }
        }
        finally
        {
            if (xp is not null) System.Buffers.ArrayPool<float>.Shared.Return(xp);
            if (cached is null) System.Buffers.ArrayPool<float>.Shared.Return(aPacked);
            System.Buffers.ArrayPool<int>.Shared.Return(offsets);
        }
    }

    /// <summary>
    /// Packs persistent weights on their first use. A method of its own: the factory's closure would otherwise be
    /// allocated on every call of the method declaring the captured locals, used or not.
    /// </summary>
    private static float[] PackOnce(Tensor w, int m, int k) =>
        PackedRowTiles.GetValue(w, t => PackRowTiles(t.Span<float>(), m, k, new float[(m + ShiftRows - 1) / ShiftRows * ShiftRows * k]));

    /// <summary>Weights [M, K] as tiles of 8 rows stored tap-major ([tile][K][8], missing rows zero), so the kernel's 8 broadcasts are adjacent.</summary>
    private static float[] PackRowTiles(ReadOnlySpan<float> w, int m, int k, float[] packed)
    {
        var tiles = (m + ShiftRows - 1) / ShiftRows;
        for (var t = 0; t < tiles; t++)
            for (var r = 0; r < ShiftRows; r++)
            {
                var row = t * ShiftRows + r;
                var dst = packed.AsSpan(t * ShiftRows * k);
                if (row >= m) { for (var kk = 0; kk < k; kk++) dst[kk * ShiftRows + r] = 0; continue; }
                var src = w.Slice(row * k, k);
                for (var kk = 0; kk < k; kk++) dst[kk * ShiftRows + r] = src[kk];
            }
        return packed;
    }

    /// <summary>Packed row tiles of persistent (model) weights, made on first use.</summary>
    private static readonly ConditionalWeakTable<Tensor, float[]> PackedRowTiles = new();

    private unsafe struct ShiftedJob
    {
        public float* X, A, Bias, Y;
        public int* Offsets;
        public int K, M, Wp, Ow, Q, P, Panels, RowTiles, PanelGroup, RowGroup, Items;
        public long InputLength, MaxOffset;
    }

    private static unsafe void ShiftedItem(void* state, int item)
    {
        ref var j = ref *(ShiftedJob*)state;
        var panelGroups = (j.Panels + j.PanelGroup - 1) / j.PanelGroup;
        int p0 = item % panelGroups * j.PanelGroup, p1 = Math.Min(j.Panels, p0 + j.PanelGroup);
        int t0 = item / panelGroups * j.RowGroup, t1 = Math.Min(j.RowTiles, t0 + j.RowGroup);
        var tile = stackalloc float[ShiftRows * ShiftPanel];
        // The largest offset a tap adds: a panel whose reads end past the input is packed into a zero-padded copy first.
        var reach = j.MaxOffset + ShiftPanel;
        float[]? tail = null;
        try
        {
            for (var p = p0; p < p1; p++)
            {
                var q0 = p * ShiftPanel;
                var b = j.X + q0;
                var off = j.Offsets;
                if (q0 + reach > j.InputLength)
                {
                    tail ??= System.Buffers.ArrayPool<float>.Shared.Rent(j.K * ShiftPanel);
                    for (var kk = 0; kk < j.K; kk++)
                        for (var e = 0; e < ShiftPanel; e++)
                        {
                            var at = q0 + (long)j.Offsets[kk] + e;
                            tail[kk * ShiftPanel + e] = at < j.InputLength ? j.X[at] : 0f;
                        }
                    fixed (float* pt = tail)
                        for (var t = t0; t < t1; t++)
                        {
                            Kernel8x32Shifted(j.A + (long)t * ShiftRows * j.K, pt, j.Offsets + j.K, j.K, tile);
                            StoreShiftedTile(ref j, tile, t, q0);
                        }
                    continue;
                }
                var contiguous = j.Wp == j.Ow && q0 + ShiftPanel <= j.Q;
                for (var t = t0; t < t1; t++)
                {
                    if (contiguous && (t + 1) * ShiftRows <= j.M)
                    {
                        Kernel8x32Shifted(j.A + (long)t * ShiftRows * j.K, b, off, j.K, null,
                            j.Y + (long)t * ShiftRows * j.P + q0, j.P, j.Bias == null ? null : j.Bias + t * ShiftRows);
                        continue;
                    }
                    Kernel8x32Shifted(j.A + (long)t * ShiftRows * j.K, b, off, j.K, tile);
                    StoreShiftedTile(ref j, tile, t, q0);
                }
            }
        }
        finally
        {
            if (tail is not null) System.Buffers.ArrayPool<float>.Shared.Return(tail);
        }
    }

    /// <summary>tile[8×32] = A-tile[K][8]ᵀ · B, where B's row kk is the 32 floats at b + offsets[kk].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Kernel8x32Shifted(float* a, float* b, int* offsets, int k, float* tile, float* y = null, long ldy = 0, float* bias = null)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (var kk = 0; kk < k; kk++)
        {
            var bp = b + offsets[kk];
            var b0 = Vector512.Load(bp);
            var b1 = Vector512.Load(bp + 16);
            var x = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]); c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]); c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]); c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]); c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]); c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[6]); c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[7]); c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
            a += ShiftRows;
        }
        if (y != null)
        {
            // A full tile of contiguous outputs: bias added and stored straight from the registers.
            StoreRow(y, bias == null ? 0f : bias[0], c00, c01); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[1], c10, c11); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[2], c20, c21); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[3], c30, c31); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[4], c40, c41); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[5], c50, c51); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[6], c60, c61); y += ldy;
            StoreRow(y, bias == null ? 0f : bias[7], c70, c71);
            return;
        }
        c00.Store(tile); c01.Store(tile + 16); c10.Store(tile + 32); c11.Store(tile + 48);
        c20.Store(tile + 64); c21.Store(tile + 80); c30.Store(tile + 96); c31.Store(tile + 112);
        c40.Store(tile + 128); c41.Store(tile + 144); c50.Store(tile + 160); c51.Store(tile + 176);
        c60.Store(tile + 192); c61.Store(tile + 208); c70.Store(tile + 224); c71.Store(tile + 240);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void StoreRow(float* y, float bias, Vector512<float> v0, Vector512<float> v1)
    {
        var b = Vector512.Create(bias);
        (v0 + b).Store(y);
        (v1 + b).Store(y + 16);
    }

    /// <summary>Copies a tile's valid outputs (rows below M, grid columns below OW) to [M, OH, OW], adding the bias.</summary>
    private static unsafe void StoreShiftedTile(ref ShiftedJob j, float* tile, int t, int q0)
    {
        var rows = Math.Min(ShiftRows, j.M - t * ShiftRows);
        var end = Math.Min(j.Q, q0 + ShiftPanel);
        for (var r = 0; r < rows; r++)
        {
            var ch = t * ShiftRows + r;
            var bias = j.Bias == null ? 0f : j.Bias[ch];
            var src = tile + r * ShiftPanel;
            var dst = j.Y + (long)ch * j.P;
            for (var at = q0; at < end;)
            {
                int oy = at / j.Wp, ox = at % j.Wp, segment = Math.Min(j.Wp - ox, end - at);
                var valid = Math.Min(segment, j.Ow - ox);
                var from = src + (at - q0);
                var to = dst + oy * j.Ow + ox;
                var e = 0;
                for (; e + 8 <= valid; e += 8) (Vector256.Load(from + e) + Vector256.Create(bias)).Store(to + e);
                for (; e < valid; e++) to[e] = from[e] + bias;
                at += segment;
            }
        }
    }
}

public static partial class Convolution
{
    /// <summary>
    /// ConvTranspose whose kernel equals its stride (no padding, no dilation: the FPN upsamplers): the windows tile the
    /// output, so every output pixel gets exactly one tap. Per tap (ky, kx) one GEMM Wₖ[M, C] · x[C, H·W], then the
    /// taps' planes are interleaved into the output with the bias, instead of a scatter-add over a cleared output.
    /// </summary>
    private static Tensor TilingTranspose2D(Tensor x, Tensor w, Tensor? bias, int sh, int sw)
    {
        var r = Tensor.Uninitialized(DType.F32, [x.Shape[0], w.Shape[1], x.Shape[2] * sh, x.Shape[3] * sw]);
        TilingTranspose2D(x.Span<float>(), x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], w, bias, sh, sw, r.Span<float>());
        return r;
    }

    /// <summary>
    /// The same on spans: x [n, c, h, wd] into y [n, m, h·sh, wd·sw] for weights [c, m, sh, sw] (one group). Allocates
    /// nothing after warm-up: planned code calls it on arena spans.
    /// </summary>
    public static void TilingTranspose2D(ReadOnlySpan<float> xs, int n, int c, int h, int wd, Tensor w, Tensor? bias, int sh, int sw, Span<float> rs)
    {
        var m = w.Shape[1];
        if (w.Rank != 4 || w.Shape[0] != c || w.Shape[2] != sh || w.Shape[3] != sw)
            throw new KernelException($"ConvTranspose weight [{string.Join(", ", w.Shape)}] is not [{c}, M, {sh}, {sw}]");
        int taps = sh * sw, pin = h * wd, oh = h * sh, ow = wd * sw;
        if (xs.Length < (long)n * c * pin || rs.Length < (long)n * m * oh * ow) throw new KernelException("ConvTranspose operands are shorter than their dims");
        var cached = !w.Persistent ? null : TapMajorWeights.TryGetValue(w, out var packed) ? packed : TapMajorOnce(w, c, m, taps);
        var wt = cached ?? TapMajor(w.Span<float>(), c, m, taps, System.Buffers.ArrayPool<float>.Shared.Rent(taps * m * c));
        var col = System.Buffers.ArrayPool<float>.Shared.Rent(taps * m * pin);
        var bs = bias is null ? default : bias.Span<float>();
        try
        {
            for (var b = 0; b < n; b++)
            {
                // The taps' [M, C] matrices are stacked, so one GEMM (x packed once) makes every tap's planes.
                MatMul.Gemm(wt.AsSpan(0, taps * m * c), c, false, xs.Slice(b * c * pin, c * pin), pin, false,
                    col.AsSpan(0, taps * m * pin), pin, taps * m, pin, c, false);
                for (var oc = 0; oc < m; oc++)
                {
                    var bias0 = bias is null ? 0f : bs[oc];
                    for (var iy = 0; iy < h; iy++)
                        for (var ky = 0; ky < sh; ky++)
                        {
                            var dst = rs.Slice(((b * m + oc) * oh + iy * sh + ky) * ow, ow);
                            if (sw == 2)
                            {
                                Interleave2(col.AsSpan(((ky * 2) * m + oc) * pin + iy * wd, wd), col.AsSpan(((ky * 2 + 1) * m + oc) * pin + iy * wd, wd), bias0, dst);
                                continue;
                            }
                            for (var kx = 0; kx < sw; kx++)
                            {
                                var src = col.AsSpan(((ky * sw + kx) * m + oc) * pin + iy * wd, wd);
                                for (var ix = 0; ix < wd; ix++) dst[ix * sw + kx] = src[ix] + bias0;
                            }
                        }
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(col);
            if (cached is null) System.Buffers.ArrayPool<float>.Shared.Return(wt);
        }
    }

    /// <summary>Reorders persistent weights on their first use (a method of its own, so the closure is made only then).</summary>
    private static float[] TapMajorOnce(Tensor w, int c, int m, int taps) =>
        TapMajorWeights.GetValue(w, t => TapMajor(t.Span<float>(), c, m, taps, new float[taps * m * c]));

    /// <summary>ConvTranspose weights [C, M, kh, kw] as one [M, C] matrix per tap.</summary>
    private static float[] TapMajor(ReadOnlySpan<float> w, int c, int m, int taps, float[] packed)
    {
        for (var ci = 0; ci < c; ci++)
            for (var oc = 0; oc < m; oc++)
                for (var t = 0; t < taps; t++)
                    packed[(t * m + oc) * c + ci] = w[(ci * m + oc) * taps + t];
        return packed;
    }

    private static readonly ConditionalWeakTable<Tensor, float[]> TapMajorWeights = new();

    /// <summary>dst[2i] = a[i] + bias, dst[2i + 1] = b[i] + bias.</summary>
    private static void Interleave2(ReadOnlySpan<float> a, ReadOnlySpan<float> b, float bias, Span<float> dst)
    {
        var i = 0;
        if (Avx.IsSupported)
        {
            var vb = Vector256.Create(bias);
            ref var ra = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(a);
            ref var rb = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(b);
            ref var rd = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(dst);
            for (; i + 8 <= a.Length; i += 8)
            {
                var va = Vector256.LoadUnsafe(ref ra, (nuint)i) + vb;
                var vv = Vector256.LoadUnsafe(ref rb, (nuint)i) + vb;
                var lo = Avx.UnpackLow(va, vv);  // a0 b0 a1 b1 | a4 b4 a5 b5
                var hi = Avx.UnpackHigh(va, vv); // a2 b2 a3 b3 | a6 b6 a7 b7
                Avx.Permute2x128(lo, hi, 0x20).StoreUnsafe(ref rd, (nuint)(2 * i));
                Avx.Permute2x128(lo, hi, 0x31).StoreUnsafe(ref rd, (nuint)(2 * i + 8));
            }
        }
        for (; i < a.Length; i++)
        {
            dst[2 * i] = a[i] + bias;
            dst[2 * i + 1] = b[i] + bias;
        }
    }
}
