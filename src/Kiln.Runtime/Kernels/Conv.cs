namespace Kiln.Runtime.Kernels;

/// <summary>Sliding-window geometry shared by Conv, ConvTranspose and pooling: kernel, strides, dilations, pads per spatial dim.</summary>
public sealed record Window(int[] Kernel, int[] Strides, int[] Dilations, int[] PadsBegin, int[] PadsEnd)
{
    public int Rank => Kernel.Length;

    /// <summary>Resolves ONNX attributes (auto_pad, pads, strides, dilations) for the given input spatial shape.</summary>
    public static Window Resolve(int[] spatial, int[] kernel, long[]? strides, long[]? dilations, long[]? pads, string autoPad, bool ceilMode = false)
    {
        var r = kernel.Length;
        if (spatial.Length != r) throw new KernelException($"kernel has {r} spatial dims, input has {spatial.Length}");
        var s = strides?.Select(v => (int)v).ToArray() ?? Enumerable.Repeat(1, r).ToArray();
        var d = dilations?.Select(v => (int)v).ToArray() ?? Enumerable.Repeat(1, r).ToArray();
        if (s.Length != r || d.Length != r) throw new KernelException("strides/dilations do not match the kernel rank");
        if (s.Any(v => v <= 0) || d.Any(v => v <= 0)) throw new KernelException("strides and dilations must be positive");
        var pb = new int[r];
        var pe = new int[r];
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            for (var i = 0; i < r; i++)
            {
                var o = (spatial[i] + s[i] - 1) / s[i];
                var total = Math.Max(0, (o - 1) * s[i] + (kernel[i] - 1) * d[i] + 1 - spatial[i]);
                pb[i] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2;
                pe[i] = total - pb[i];
            }
        }
        else if (autoPad is "NOTSET" or "" && pads is not null)
        {
            if (pads.Length != 2 * r) throw new KernelException($"pads has {pads.Length} values for {r} spatial dims");
            for (var i = 0; i < r; i++) { pb[i] = (int)pads[i]; pe[i] = (int)pads[i + r]; }
        }
        return new Window(kernel, s, d, pb, pe) { CeilMode = ceilMode };
    }

    public bool CeilMode { get; init; }

    /// <summary>Stride 1 and no padding on every dim: a 1×1 kernel then reads the input itself (no im2col).</summary>
    public bool IsPointwise
    {
        get
        {
            for (var i = 0; i < Rank; i++)
                if (Strides[i] != 1 || PadsBegin[i] != 0 || PadsEnd[i] != 0) return false;
            return true;
        }
    }

    public int[] OutputShape(int[] spatial)
    {
        var o = new int[Rank];
        for (var i = 0; i < Rank; i++) o[i] = OutputSize(i, spatial[i]);
        return o;
    }

    /// <summary>The output size along spatial dim i for an input of <paramref name="input"/>.</summary>
    public int OutputSize(int i, int input)
    {
        var span = input + PadsBegin[i] + PadsEnd[i] - ((Kernel[i] - 1) * Dilations[i] + 1);
        if (span < 0) throw new KernelException($"the window ({Kernel[i]}, dilation {Dilations[i]}) is larger than the padded input ({input + PadsBegin[i] + PadsEnd[i]}) on spatial dim {i}");
        var n = CeilMode ? (span + Strides[i] - 1) / Strides[i] + 1 : span / Strides[i] + 1;
        // A ceil-mode window must start inside the input or its left padding.
        if (CeilMode && (n - 1) * Strides[i] >= input + PadsBegin[i]) n--;
        return n;
    }
}

/// <summary>
/// Convolution as im2col + the f32 GEMM (the GEMM does the heavy lifting; a 1×1 stride-1 unpadded convolution
/// skips im2col). ConvTranspose is the adjoint: GEMM into columns, then col2im scatter-add.
/// </summary>
public static partial class Convolution
{
    public static Tensor Conv(Tensor x, Tensor w, Tensor? bias, Window win, int group)
    {
        var orig = x.Type;
        if (x.Type != DType.F32) { x = Cast.To(x, DType.F32); w = Cast.To(w, DType.F32); bias = bias is null ? null : Cast.To(bias, DType.F32); }
        var n = x.Shape[0];
        var c = x.Shape[1];
        var m = w.Shape[0];
        var spatial = x.Shape[2..];
        if (c % group != 0 || m % group != 0) throw new KernelException($"Conv group {group} does not divide channels {c} / filters {m}");
        if (w.Shape[1] != c / group) throw new KernelException($"Conv weight has {w.Shape[1]} input channels per group; input has {c / group}");
        var outSpatial = win.OutputShape(spatial);
        if (spatial.Length == 2)
        {
            var y = Tensor.Uninitialized(DType.F32, [n, m, .. outSpatial]);
            Conv2D(x.Span<float>(), n, c, spatial[0], spatial[1], w, bias, win, group, y.Span<float>(), outSpatial[0], outSpatial[1]);
            return Cast.To(y, orig);
        }
        var p = (int)Tensor.Count(outSpatial);
        var kSize = (int)Tensor.Count(win.Kernel);
        var cg = c / group;
        var inner = (int)Tensor.Count(spatial);
        // GEMM with accumulate = false writes every output element (k = cg·kSize ≥ 1 here).
        var r = cg * kSize > 0 ? Tensor.Uninitialized(DType.F32, [n, m, .. outSpatial]) : Tensor.Zeros(DType.F32, [n, m, .. outSpatial]);
        var direct = kSize == 1 && win.IsPointwise;
        var rs = r.Span<float>();
        if (cg * kSize > 0)
            GroupGemms(x.Span<float>(), n, c, inner, w.Span<float>(), rs, m, group, kSize, p, direct, direct ? null : ColumnMap(spatial, outSpatial, win), null);
        if (bias is not null) AddChannelBias(rs, bias, n, m, p);
        return Cast.To(r, orig);
    }

    /// <summary>
    /// 2-D convolution of x [n, c, h, wd] into y [n, m, oh, ow] (f32, weights [m, c / group, kh, kw], an optional bias
    /// of m): depthwise directly, one group through shifted rows (AVX-512) or blocked GEMMs, other groups through
    /// im2col columns per group. Allocates nothing after warm-up (scratch from pools, packed weights cached per weight
    /// tensor), so planned code calls it on arena spans.
    /// </summary>
    public static void Conv2D(ReadOnlySpan<float> x, int n, int c, int h, int wd, Tensor w, Tensor? bias, Window win, int group, Span<float> y, int oh, int ow)
    {
        var m = w.Shape[0];
        if (w.Rank != 4 || win.Rank != 2) throw new KernelException($"Conv2D takes a 4-D weight and a 2-D window, got weight rank {w.Rank}");
        if (c % group != 0 || m % group != 0) throw new KernelException($"Conv group {group} does not divide channels {c} / filters {m}");
        if (w.Shape[1] != c / group) throw new KernelException($"Conv weight has {w.Shape[1]} input channels per group; input has {c / group}");
        if (win.OutputSize(0, h) != oh || win.OutputSize(1, wd) != ow)
            throw new KernelException($"Conv of a {h}×{wd} input makes {win.OutputSize(0, h)}×{win.OutputSize(1, wd)}, not {oh}×{ow}");
        if (x.Length < (long)n * c * h * wd || y.Length < (long)n * m * oh * ow) throw new KernelException("Conv operands are shorter than their dims");
        y = y[..(n * m * oh * ow)];
        var kSize = win.Kernel[0] * win.Kernel[1];
        var p = oh * ow;
        if (group == c && m == c) { Depthwise(x, n, c, h, wd, w, bias, win, y, oh, ow); return; }
        var cg = c / group;
        if (cg * kSize == 0)
        {
            y.Clear();
            if (bias is not null) AddChannelBias(y, bias, n, m, p);
            return;
        }
        var direct = kSize == 1 && win.IsPointwise;
        if (group == 1 && ShiftedRowsApply(win))
        {
            ShiftedRows2D(x, n, c, h, wd, w, bias, y, win, oh, ow);
            return;
        }
        if (group == 1) Blocked2D(x, n, c, h, wd, w, y, win, oh, ow, direct);
        else GroupGemms(x, n, c, h * wd, w.Span<float>(), y, m, group, kSize, p, direct, null, (h, wd, ow, new Taps(win)));
        if (bias is not null) AddChannelBias(y, bias, n, m, p);
    }

    /// <summary>
    /// Convolution as one GEMM per batch entry and group: weights [M/g, C/g·k] times the group's im2col columns
    /// [C/g·k, P] — the input itself for a pointwise kernel, else filled per channel by 2-D row segments
    /// (<paramref name="planar"/>) or through a column map (any rank). Columns come from the shared pool.
    /// </summary>
    private static void GroupGemms(ReadOnlySpan<float> x, int n, int c, int inner, ReadOnlySpan<float> ws, Span<float> y, int m, int group, int kSize, int p,
        bool direct, int[]? map, (int H, int Wd, int Ow, Taps Taps)? planar)
    {
        var cg = c / group;
        var mg = m / group;
        var col = direct ? null : System.Buffers.ArrayPool<float>.Shared.Rent(checked(cg * kSize * p));
        try
        {
            for (var b = 0; b < n; b++)
                for (var g = 0; g < group; g++)
                {
                    var xg = x.Slice((b * c + g * cg) * inner, cg * inner);
                    ReadOnlySpan<float> colSpan = xg;
                    if (!direct)
                    {
                        for (var ch = 0; ch < cg; ch++)
                        {
                            var src = xg.Slice(ch * inner, inner);
                            var dst = col.AsSpan(ch * kSize * p, kSize * p);
                            if (planar is { } q) Im2ColColumns(src, q.H, q.Wd, q.Ow, q.Taps, 0, p, dst);
                            else
                                for (var i = 0; i < dst.Length; i++)
                                {
                                    var at = map![i];
                                    dst[i] = at < 0 ? 0 : src[at];
                                }
                        }
                        colSpan = col.AsSpan(0, cg * kSize * p);
                    }
                    MatMul.Gemm(ws.Slice(g * mg * cg * kSize, mg * cg * kSize), cg * kSize, false, colSpan, p, false,
                        y.Slice((b * m + g * mg) * p, mg * p), p, mg, p, cg * kSize, false);
                }
        }
        finally
        {
            if (col is not null) System.Buffers.ArrayPool<float>.Shared.Return(col);
        }
    }

    /// <summary>
    /// Depthwise 2-D convolution (one filter per channel, as in MobileNet blocks) computed directly, channels in
    /// parallel: im2col + a one-row GEMM per channel would copy the input kernel-size times for a few FLOPs each.
    /// </summary>
    private static unsafe void Depthwise(ReadOnlySpan<float> x, int n, int c, int h, int wd, Tensor w, Tensor? bias, Window win, Span<float> y, int oh, int ow)
    {
        fixed (float* px = x)
        fixed (float* pw = w.Span<float>())
        fixed (float* pb = bias is null ? default : bias.Span<float>())
        fixed (float* py = y)
        {
            var job = new DepthwiseJob
            {
                X = px, W = pw, B = bias is null ? null : pb, Y = py, C = c, H = h, Wd = wd, Oh = oh, Ow = ow, T = new Taps(win),
            };
            var planes = n * c;
            var threads = (long)planes * oh * ow * job.T.Kh * job.T.Kw >= 1 << 16 ? Math.Min(planes, Parallelism.Threads) : 1;
            // Planes are claimed a few at a time (the team's chunks): measured here, that beats one contiguous half per thread.
            WorkerTeam.For(planes, threads, &DepthwisePlane, &job);
        }
    }

    private unsafe struct DepthwiseJob
    {
        public float* X, W, B, Y;
        public int C, H, Wd, Oh, Ow;
        public Taps T;
    }

    /// <summary>A 2-D window's kernel, strides, dilations and leading pads as plain ints (kernel job structs hold it).</summary>
    private readonly struct Taps(Window win)
    {
        public readonly int Kh = win.Kernel[0], Kw = win.Kernel[1], Sh = win.Strides[0], Sw = win.Strides[1];
        public readonly int Dh = win.Dilations[0], Dw = win.Dilations[1], Ph = win.PadsBegin[0], Pw = win.PadsBegin[1];
    }


    /// <summary>
    /// One channel plane: through a padded copy in vectors of 8 outputs (<see cref="DepthwisePadded"/>) for strides 1
    /// and 2, else one output at a time.
    /// </summary>
    private static unsafe void DepthwisePlane(void* state, int bc)
    {
        ref var j = ref *(DepthwiseJob*)state;
        int h = j.H, wd = j.Wd, oh = j.Oh, ow = j.Ow, kh = j.T.Kh, kw = j.T.Kw, sh = j.T.Sh, sw = j.T.Sw, dh = j.T.Dh, dw = j.T.Dw, ph = j.T.Ph, pw = j.T.Pw;
        var ch = bc % j.C;
        var X = j.X + (long)bc * h * wd;
        var W = j.W + (long)ch * kh * kw;
        var Y = j.Y + (long)bc * oh * ow;
        var b0 = j.B == null ? 0f : j.B[ch];
        if ((sw == 1 || sw == 2) && ow >= 8 && System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            DepthwisePadded(X, W, Y, b0, h, wd, oh, ow, j.T);
            return;
        }
        // Strides above 2, rows of fewer than 8 outputs, or no AVX2: one output at a time, taps inside the input only.
        for (var oy = 0; oy < oh; oy++)
        {
            var yRow = Y + (long)oy * ow;
            var ky0 = 0;
            var ky1 = kh;
            // Rows of taps inside the input.
            while (ky0 < kh && oy * sh - ph + ky0 * dh < 0) ky0++;
            while (ky1 > ky0 && oy * sh - ph + (ky1 - 1) * dh >= h) ky1--;
            for (var ox = 0; ox < ow; ox++)
            {
                var sum = b0;
                var ix0 = ox * sw - pw;
                for (var ky = ky0; ky < ky1; ky++)
                {
                    var xRow = X + (long)(oy * sh - ph + ky * dh) * wd;
                    for (var kx = 0; kx < kw; kx++)
                    {
                        var ix = ix0 + kx * dw;
                        if ((uint)ix < (uint)wd) sum += W[ky * kw + kx] * xRow[ix];
                    }
                }
                yRow[ox] = sum;
            }
        }
    }

    [ThreadStatic] private static float[]? _paddedPlane;

    /// <summary>
    /// One depthwise plane through a zero-padded copy: every tap of every output then reads inside the copy, so each
    /// row is whole vectors of 8 outputs (the last one overlapping its neighbour when the width is not a multiple of 8)
    /// with no border cases — small MobileNet planes (8×10 with a 5×5 kernel) have few interior vectors otherwise.
    /// Stride 2 loads 16 inputs per tap and keeps the even lanes.
    /// </summary>
    private static unsafe void DepthwisePadded(float* x, float* w, float* y, float bias, int h, int wd, int oh, int ow, in Taps t)
    {
        int kh = t.Kh, kw = t.Kw, sh = t.Sh, sw = t.Sw, dh = t.Dh, dw = t.Dw;
        // Padded extent the outputs read, plus 16 floats of slack for stride 2's wide loads.
        var hp = Math.Max(t.Ph + h, (oh - 1) * sh + (kh - 1) * dh + 1);
        var wp = Math.Max(t.Pw + wd, (ow - 1) * sw + (kw - 1) * dw + 1);
        var length = hp * wp + 16;
        if (_paddedPlane is null || _paddedPlane.Length < length) _paddedPlane = new float[Math.Max(length, 4096)];
        fixed (float* xp = _paddedPlane)
        {
            new Span<float>(xp, length).Clear();
            for (var iy = 0; iy < h; iy++)
                new ReadOnlySpan<float>(x + (long)iy * wd, wd).CopyTo(new Span<float>(xp + (long)(iy + t.Ph) * wp + t.Pw, wd));
            var taps = kh * kw;
            var weights = stackalloc System.Runtime.Intrinsics.Vector256<float>[taps];
            var offsets = stackalloc int[taps];
            for (var ky = 0; ky < kh; ky++)
                for (var kx = 0; kx < kw; kx++)
                {
                    weights[ky * kw + kx] = System.Runtime.Intrinsics.Vector256.Create(w[ky * kw + kx]);
                    offsets[ky * kw + kx] = ky * dh * wp + kx * dw;
                }
            var vb = System.Runtime.Intrinsics.Vector256.Create(bias);
            for (var oy = 0; oy < oh; oy++)
            {
                var row = xp + (long)oy * sh * wp;
                var yRow = y + (long)oy * ow;
                for (var ox = 0; ox < ow; ox += 8)
                {
                    if (ox + 8 > ow) ox = ow - 8; // the last vector overlaps the previous one
                    var acc = vb;
                    if (sw == 1)
                    {
                        var at = row + ox;
                        for (var k = 0; k < taps; k++)
                            acc = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(System.Runtime.Intrinsics.Vector256.Load(at + offsets[k]), weights[k], acc);
                    }
                    else
                    {
                        var at = row + 2 * ox;
                        for (var k = 0; k < taps; k++)
                        {
                            var lo = System.Runtime.Intrinsics.Vector256.Load(at + offsets[k]);
                            var hi = System.Runtime.Intrinsics.Vector256.Load(at + offsets[k] + 8);
                            // [a0 a2 b0 b2 | a4 a6 b4 b6] → [a0 a2 a4 a6 b0 b2 b4 b6]
                            var even = System.Runtime.Intrinsics.X86.Avx.Shuffle(lo, hi, 0b10_00_10_00);
                            even = System.Runtime.Intrinsics.Vector256.AsSingle(System.Runtime.Intrinsics.X86.Avx2.Permute4x64(System.Runtime.Intrinsics.Vector256.AsDouble(even), 0b11_01_10_00));
                            acc = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(even, weights[k], acc);
                        }
                    }
                    System.Runtime.Intrinsics.Vector256.Store(acc, yRow + ox);
                }
            }
        }
    }

    /// <summary>
    /// 2-D convolution (one group) as GEMMs over blocks of output pixels: each block's im2col columns (or, for a 1×1
    /// stride-1 kernel, the input itself) are a [C·k × block] matrix small enough to stay in L2 while the GEMM packs
    /// and multiplies it, instead of one im2col matrix of the whole image written and packed through memory.
    /// Blocks run in parallel on the worker team.
    /// </summary>
    private static unsafe void Blocked2D(ReadOnlySpan<float> x, int n, int c, int h, int wd, Tensor w, Span<float> y, Window win, int oh, int ow, bool direct)
    {
        var m = w.Shape[0];
        var kSize = win.Kernel[0] * win.Kernel[1];
        var k = c * kSize;
        var p = oh * ow;
        // Columns per block: a multiple of the GEMM's 32-column panels, the block's k × columns floats within ~512 KB.
        var block = Math.Clamp(131072 / k / 32 * 32, 32, 1024);
        var blocks = (p + block - 1) / block;
        fixed (float* px = x)
        fixed (float* pw = w.Span<float>())
        fixed (float* py = y)
        {
            var job = new ConvBlockJob
            {
                X = px, W = pw, Y = py, C = c, M = m, H = h, Wd = wd, Ow = ow, P = p,
                T = new Taps(win), Block = block, Blocks = blocks, Direct = direct,
            };
            var flops = 2.0 * n * m * k * p;
            WorkerTeam.For(n * blocks, flops >= 4e6 ? Parallelism.Threads : 1, &ConvBlock, &job);
        }
    }

    private unsafe struct ConvBlockJob
    {
        public float* X, W, Y;
        public int C, M, H, Wd, Ow, P, Block, Blocks;
        public Taps T;
        public bool Direct;
    }

    private static unsafe void ConvBlock(void* state, int item)
    {
        ref var j = ref *(ConvBlockJob*)state;
        int b = item / j.Blocks, j0 = item % j.Blocks * j.Block, nb = Math.Min(j.Block, j.P - j0);
        var kSize = j.T.Kh * j.T.Kw;
        var k = j.C * kSize;
        var x = j.X + (long)b * j.C * j.H * j.Wd;
        var y = new Span<float>(j.Y + (long)b * j.M * j.P + j0, (j.M - 1) * j.P + nb);
        var weights = new ReadOnlySpan<float>(j.W, j.M * k);
        if (j.Direct)
        {
            MatMul.Gemm(weights, k, false, new ReadOnlySpan<float>(x + j0, (k - 1) * j.P + nb), j.P, false, y, j.P, j.M, nb, k, false);
            return;
        }
        var col = System.Buffers.ArrayPool<float>.Shared.Rent(k * nb);
        try
        {
            for (var ch = 0; ch < j.C; ch++)
                Im2ColColumns(new ReadOnlySpan<float>(x + (long)ch * j.H * j.Wd, j.H * j.Wd), j.H, j.Wd, j.Ow, j.T, j0, nb, col.AsSpan(ch * kSize * nb, kSize * nb));
            MatMul.Gemm(weights, k, false, col.AsSpan(0, k * nb), nb, false, y, j.P, j.M, nb, k, false);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(col);
        }
    }

    /// <summary>
    /// The im2col rows of one 2-D channel for output pixels [j0, j0 + nb) (row-major over [oh, ow]): for each kernel
    /// tap (ky, kx), nb input values, zeros where the tap falls in the padding. Row segment by row segment, so
    /// stride-1 segments are one span copy.
    /// </summary>
    private static void Im2ColColumns(ReadOnlySpan<float> plane, int h, int wd, int ow, in Taps t, int j0, int nb, Span<float> dst)
    {
        for (var ky = 0; ky < t.Kh; ky++)
            for (var kx = 0; kx < t.Kw; kx++)
            {
                var rowOut = dst.Slice((ky * t.Kw + kx) * nb, nb);
                var off = kx * t.Dw - t.Pw;
                // Output columns whose input column ox·sw + off lies inside the row: [lo, hi).
                var lo = Math.Min(ow, Math.Max(0, (-off + t.Sw - 1) / t.Sw));
                var hi = wd - 1 - off < 0 ? 0 : Math.Min(ow, (wd - 1 - off) / t.Sw + 1);
                if (hi < lo) hi = lo;
                for (var at = j0; at < j0 + nb;)
                {
                    int oy = at / ow, ox0 = at % ow, ox1 = Math.Min(ow, ox0 + (j0 + nb - at));
                    var seg = rowOut.Slice(at - j0, ox1 - ox0);
                    var iy = oy * t.Sh - t.Ph + ky * t.Dh;
                    int a = Math.Max(ox0, lo), e = Math.Min(ox1, hi);
                    if (iy < 0 || iy >= h || a >= e) seg.Clear();
                    else
                    {
                        var row = plane.Slice(iy * wd, wd);
                        seg[..(a - ox0)].Clear();
                        seg[(e - ox0)..].Clear();
                        if (t.Sw == 1) row.Slice(a + off, e - a).CopyTo(seg[(a - ox0)..]);
                        else for (var ox = a; ox < e; ox++) seg[ox - ox0] = row[ox * t.Sw + off];
                    }
                    at += ox1 - ox0;
                }
            }
    }

    /// <summary>Adds bias[channel] to every element of each [n, m, spatial] channel plane.</summary>
    private static void AddChannelBias(Span<float> rs, Tensor bias, int n, int m, int plane)
    {
        var bs = bias.Span<float>();
        for (var b = 0; b < n; b++)
            for (var k = 0; k < m; k++)
                System.Numerics.Tensors.TensorPrimitives.Add(rs.Slice((b * m + k) * plane, plane), bs[k], rs.Slice((b * m + k) * plane, plane));
    }

    /// <summary>For each (kernel offset, output position): the input spatial offset it reads, or -1 in padding.</summary>
    private static int[] ColumnMap(int[] spatial, int[] outSpatial, Window win)
    {
        var rank = spatial.Length;
        var kSize = (int)Tensor.Count(win.Kernel);
        var p = (int)Tensor.Count(outSpatial);
        var map = new int[(long)kSize * p];
        var kIdx = new int[rank];
        var oIdx = new int[rank];
        var inStrides = Tensor.Strides(spatial);
        for (var k = 0; k < kSize; k++)
        {
            Unflatten(k, win.Kernel, kIdx);
            for (var o = 0; o < p; o++)
            {
                Unflatten(o, outSpatial, oIdx);
                var at = 0L;
                for (var i = 0; i < rank; i++)
                {
                    var pos = oIdx[i] * win.Strides[i] - win.PadsBegin[i] + kIdx[i] * win.Dilations[i];
                    if (pos < 0 || pos >= spatial[i]) { at = -1; break; }
                    at += pos * inStrides[i];
                }
                map[(long)k * p + o] = (int)at;
            }
        }
        return map;
    }

    public static void Unflatten(long flat, int[] shape, int[] idx)
    {
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            idx[i] = (int)(flat % shape[i]);
            flat /= shape[i];
        }
    }

    public static Tensor ConvTranspose(Tensor x, Tensor w, Tensor? bias, int[] kernel, long[]? strides, long[]? dilations, long[]? pads,
        string autoPad, long[]? outputPadding, long[]? outputShape, int group)
    {
        var orig = x.Type;
        if (x.Type != DType.F32) { x = Cast.To(x, DType.F32); w = Cast.To(w, DType.F32); bias = bias is null ? null : Cast.To(bias, DType.F32); }
        var n = x.Shape[0];
        var c = x.Shape[1];
        var spatial = x.Shape[2..];
        var rank = spatial.Length;
        var mg = w.Shape[1];
        var m = mg * group;
        var cg = c / group;
        var s = strides?.Select(v => (int)v).ToArray() ?? Enumerable.Repeat(1, rank).ToArray();
        var d = dilations?.Select(v => (int)v).ToArray() ?? Enumerable.Repeat(1, rank).ToArray();
        var op = outputPadding?.Select(v => (int)v).ToArray() ?? new int[rank];
        var pb = new int[rank];
        var pe = new int[rank];
        var outSpatial = new int[rank];
        for (var i = 0; i < rank; i++)
        {
            var full = s[i] * (spatial[i] - 1) + op[i] + (kernel[i] - 1) * d[i] + 1;
            if (outputShape is not null || autoPad is "SAME_UPPER" or "SAME_LOWER")
            {
                var want = outputShape is not null ? (int)outputShape[outputShape.Length - rank + i] : spatial[i] * s[i];
                var total = full - want;
                // Floor division, as ONNX's definition (a negative total pads the end, i.e. grows the output).
                var half = (int)Math.Floor(total / 2.0);
                if (autoPad == "SAME_UPPER") { pb[i] = half; pe[i] = total - half; }
                else { pb[i] = total - half; pe[i] = half; }
                outSpatial[i] = want;
            }
            else
            {
                if (pads is not null) { pb[i] = (int)pads[i]; pe[i] = (int)pads[i + rank]; }
                outSpatial[i] = full - pb[i] - pe[i];
            }
        }
        var pin = (int)Tensor.Count(spatial);
        var pout = (int)Tensor.Count(outSpatial);
        var kSize = (int)Tensor.Count(kernel);
        if (rank == 2 && group == 1 && kernel[0] == s[0] && kernel[1] == s[1] && d.All(v => v == 1) && pb.All(v => v == 0)
            && outSpatial[0] == spatial[0] * s[0] && outSpatial[1] == spatial[1] * s[1])
            return Cast.To(TilingTranspose2D(x, w, bias, s[0], s[1]), orig);
        var col = System.Buffers.ArrayPool<float>.Shared.Rent(checked(mg * kSize * pin));
        var target = System.Buffers.ArrayPool<int>.Shared.Rent(checked(kSize * pin));
        // The output is a sum of scattered contributions: start from zeros (a pooled buffer, cleared).
        var r = Tensor.Uninitialized(DType.F32, [n, m, .. outSpatial]);
        r.Span<float>().Clear();
        var xs = x.Span<float>();
        var ws = w.Span<float>();
        var rs = r.Span<float>();
        var kIdx = new int[rank];
        var iIdx = new int[rank];
        var outStrides = Tensor.Strides(outSpatial);
        try
        {
            // target[k, pin] = output spatial offset, or -1 outside.
            for (var k = 0; k < kSize; k++)
            {
                Unflatten(k, kernel, kIdx);
                for (var q = 0; q < pin; q++)
                {
                    Unflatten(q, spatial, iIdx);
                    long at = 0;
                    for (var i = 0; i < rank; i++)
                    {
                        var pos = iIdx[i] * s[i] - pb[i] + kIdx[i] * d[i];
                        if (pos < 0 || pos >= outSpatial[i]) { at = -1; break; }
                        at += pos * outStrides[i];
                    }
                    target[(long)k * pin + q] = (int)at;
                }
            }
            var colSpan = col.AsSpan(0, mg * kSize * pin);
            for (var b = 0; b < n; b++)
                for (var g = 0; g < group; g++)
                {
                    MatMul.Gemm(ws.Slice(g * cg * mg * kSize, cg * mg * kSize), mg * kSize, true,
                        xs.Slice((b * c + g * cg) * pin, cg * pin), pin, false, colSpan, pin, mg * kSize, pin, cg, false);
                    for (var oc = 0; oc < mg; oc++)
                    {
                        var dst = rs.Slice((b * m + g * mg + oc) * pout, pout);
                        for (var k = 0; k < kSize; k++)
                        {
                            var src = colSpan.Slice((oc * kSize + k) * pin, pin);
                            var tg = target.AsSpan(k * pin, pin);
                            for (var q = 0; q < pin; q++)
                                if (tg[q] >= 0) dst[tg[q]] += src[q];
                        }
                    }
                }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(col);
            System.Buffers.ArrayPool<int>.Shared.Return(target);
        }
        if (bias is not null) AddChannelBias(rs, bias, n, m, pout);
        return Cast.To(r, orig);
    }
}
