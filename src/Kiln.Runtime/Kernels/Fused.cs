using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Runtime.Kernels;

/// <summary>
/// Kernels of Kiln's fused ops (domain <c>kiln</c>, see Kiln.Ir/Ops/FusedOps.cs): each replaces a chain of ONNX
/// nodes with one pass over the data. f32 only: the fuse pass rewrites f32 chains.
/// </summary>
public static class Fused
{
    private static void RequireF32(string op, params Tensor?[] xs)
    {
        foreach (var x in xs)
            if (x is not null && x.Type != DType.F32) throw new KernelException($"{op} takes f32 tensors, got {x.Type.Name()}");
    }

    /// <summary>y = x / sqrt(mean(x², last axis) + eps) * scale.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor scale, float eps)
    {
        RequireF32(Operators.KilnOp.RmsNorm, x, scale);
        var n = x.Rank == 0 ? 1 : x.Shape[^1];
        if (scale.Length != n) throw new KernelException($"RMSNorm scale has {scale.Length} elements for rows of {n}");
        var r = Tensor.Uninitialized(DType.F32, x.Shape);
        RmsNorm(x.Span<float>(), scale.Span<float>(), r.Span<float>(), n, eps);
        return r;
    }

    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> scale, Span<float> y, int n, float eps)
    {
        for (var i = 0; i < x.Length; i += n)
        {
            var row = x.Slice(i, n);
            var inv = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(row) / n + eps);
            var dst = y.Slice(i, n);
            TensorPrimitives.Multiply(row, inv, dst);
            TensorPrimitives.Multiply(dst, scale, dst);
        }
    }

    /// <summary>
    /// kiln:ConvActivation: the convolution, then its activation in place. <paramref name="activationParams"/>:
    /// LeakyRelu [alpha], HardSigmoid [alpha, beta], Clip [min, max].
    /// </summary>
    public static Tensor ConvActivation(Tensor x, Tensor w, Tensor? b, Window window, int group, string activation, float[] activationParams)
    {
        var y = Convolution.Conv(x, w, b, window, group);
        if (y.Type != DType.F32) throw new KernelException($"ConvActivation takes f32, got {y.Type.Name()}");
        var a = activationParams;
        Activate(y.Span<float>(), activation, a.Length > 0 ? a[0] : 0.01f, a.Length > 1 ? a[1] : 0.5f,
            a.Length > 0 ? a[0] : float.MinValue, a.Length > 1 ? a[1] : float.MaxValue);
        return y;
    }

    /// <summary>An activation by name, in place: "" (none), Relu, LeakyRelu, Sigmoid, Tanh, SiLU, GELU, HardSigmoid, HardSwish, Clip.</summary>
    public static void Activate(Span<float> y, string activation, float alpha = 0.01f, float beta = 0.5f, float min = float.MinValue, float max = float.MaxValue)
    {
        switch (activation)
        {
            case "": break;
            case "Relu": TensorPrimitives.Max(y, 0f, y); break;
            case "LeakyRelu": AffineClamp(y, alpha, 0f, float.MinValue, float.MaxValue, multiplyByInput: false, leaky: true); break;
            case "Sigmoid": TensorPrimitives.Sigmoid(y, y); break;
            case "Tanh": TensorPrimitives.Tanh(y, y); break;
            case Operators.KilnOp.SiLU: Silu(y, y); break;
            case Operators.KilnOp.Gelu: Gelu(y, y, tanh: false); break;
            case "HardSigmoid": AffineClamp(y, alpha, beta, 0f, 1f, multiplyByInput: false); break;
            case "HardSwish": AffineClamp(y, 1f / 6f, 0.5f, 0f, 1f, multiplyByInput: true); break;
            case "Clip": TensorPrimitives.Max(y, min, y); TensorPrimitives.Min(y, max, y); break;
            default: throw new KernelException($"unknown fused activation '{activation}'");
        }
    }

    /// <summary>
    /// In place: y = clamp(a·x + b, lo, hi), times x when <paramref name="multiplyByInput"/> (HardSwish); with
    /// <paramref name="leaky"/>, y = x ≥ 0 ? x : a·x. One vector loop: these activations follow every MobileNet conv.
    /// </summary>
    private static void AffineClamp(Span<float> y, float a, float b, float lo, float hi, bool multiplyByInput, bool leaky = false)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> va = Vector256.Create(a), vb = Vector256.Create(b), vlo = Vector256.Create(lo), vhi = Vector256.Create(hi);
            ref var at = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(y);
            for (; i + 8 <= y.Length; i += 8)
            {
                var x = Vector256.LoadUnsafe(ref at, (nuint)i);
                var r = leaky ? Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, Vector256<float>.Zero), x, x * va)
                    : Vector256.Min(Vector256.Max(x * va + vb, vlo), vhi);
                if (multiplyByInput) r *= x;
                r.StoreUnsafe(ref at, (nuint)i);
            }
        }
        for (; i < y.Length; i++)
        {
            var x = y[i];
            var r = leaky ? (x >= 0 ? x : x * a) : Math.Clamp(x * a + b, lo, hi);
            y[i] = multiplyByInput ? r * x : r;
        }
    }

    /// <summary>y = x * sigmoid(x).</summary>
    public static Tensor Silu(Tensor x)
    {
        RequireF32(Operators.KilnOp.SiLU, x);
        var r = Tensor.Uninitialized(DType.F32, x.Shape);
        Silu(x.Span<float>(), r.Span<float>());
        return r;
    }

    /// <summary>y = x * sigmoid(x); y may be x itself (in place).</summary>
    public static void Silu(ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> sig = stackalloc float[256];
        for (var i = 0; i < x.Length; i += 256)
        {
            var n = Math.Min(256, x.Length - i);
            var xs = x.Slice(i, n);
            TensorPrimitives.Sigmoid(xs, sig[..n]);
            TensorPrimitives.Multiply(xs, sig[..n], y.Slice(i, n));
        }
    }

    public static Tensor Gelu(Tensor x, bool tanh)
    {
        RequireF32(Operators.KilnOp.Gelu, x);
        var r = Tensor.Uninitialized(DType.F32, x.Shape);
        Gelu(x.Span<float>(), r.Span<float>(), tanh);
        return r;
    }

    /// <summary>GELU, exact (erf) or the tanh approximation; y may be x itself (in place).</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y, bool tanh)
    {
        if (tanh)
        {
            GeluTanhParallel(x, y);
            return;
        }
        for (var i = 0; i < x.Length; i++)
        {
            var v = x[i];
            y[i] = (float)(0.5 * v * (1.0 + Erf(v / Math.Sqrt(2.0))));
        }
    }

    // Elements per work item of a GELU split across cores (a 128-token GPT-2 MLP has 393,216).
    private const int GeluChunk = 1 << 15;

    private unsafe struct GeluJob
    {
        public float* X, Y;
        public int Length;
    }

    /// <summary>The tanh GELU over chunks on every core the caller allows, once there is more than one chunk.</summary>
    private static unsafe void GeluTanhParallel(ReadOnlySpan<float> x, Span<float> y)
    {
        var chunks = (x.Length + GeluChunk - 1) / GeluChunk;
        if (chunks < 2 || Parallelism.Threads < 2)
        {
            GeluTanh(x, y);
            return;
        }
        fixed (float* px = x)
        fixed (float* py = y)
        {
            var job = new GeluJob { X = px, Y = py, Length = x.Length };
            WorkerTeam.For(chunks, Parallelism.Threads, &GeluChunkOf, &job, chunk: 1);
        }
    }

    private static unsafe void GeluChunkOf(void* state, int item)
    {
        ref var j = ref *(GeluJob*)state;
        var start = item * GeluChunk;
        var n = Math.Min(GeluChunk, j.Length - start);
        GeluTanh(new ReadOnlySpan<float>(j.X + start, n), new Span<float>(j.Y + start, n));
    }

    /// <summary>
    /// ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), computed as x / (1 + exp(−2u)) with u the tanh's argument (the same
    /// function: ½(1 + tanh u) is the logistic of 2u). GPT-2's MLP applies it to every element of its widest
    /// activation, so it is one pass: with AVX-512 the exponential is inlined (<see cref="Exp"/>); otherwise chunks of
    /// TensorPrimitives' vectorized one.
    /// </summary>
    private static void GeluTanh(ReadOnlySpan<float> x, Span<float> y)
    {
        const float c1 = -2f * 0.7978845608f, c3 = c1 * 0.044715f;
        var i = 0;
        if (Avx512F.IsSupported)
        {
            ref var xr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
            ref var yr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(y);
            for (; i + 16 <= x.Length; i += 16)
            {
                var v = Vector512.LoadUnsafe(ref xr, (nuint)i);
                var t = v * Vector512.FusedMultiplyAdd(v * v, Vector512.Create(c3), Vector512.Create(c1));
                (v * Reciprocal(Vector512<float>.One + Exp(t))).StoreUnsafe(ref yr, (nuint)i);
            }
        }
        Span<float> e = stackalloc float[256];
        for (; i < x.Length; i += 256)
        {
            var n = Math.Min(256, x.Length - i);
            var xs = x.Slice(i, n);
            var es = e[..n];
            TensorPrimitives.Multiply(xs, xs, es);
            TensorPrimitives.Multiply(es, c3, es);
            TensorPrimitives.Add(es, c1, es);
            TensorPrimitives.Multiply(es, xs, es);
            TensorPrimitives.Exp(es, es);
            TensorPrimitives.Add(es, 1f, es);
            TensorPrimitives.Divide(xs, es, y.Slice(i, n));
        }
    }

    /// <summary>1/d per lane (d ≥ 1 here): the 14-bit estimate and one Newton step, far cheaper than a division.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Reciprocal(Vector512<float> d)
    {
        var r = Avx512F.Reciprocal14(d);
        return r * Vector512.FusedMultiplyAdd(-d, r, Vector512.Create(2f));
    }

    /// <summary>
    /// e^t per lane, within 2 ulp for t in [−87, 88] (below: 0 ... the smallest normal; above: e^88): 2^n · p(r) with
    /// n = round(t / ln 2), r = t − n·ln 2 in two parts, p a degree-6 polynomial. 
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Exp(Vector512<float> t)
    {
        // maxps/minps: a NaN t becomes a bound here, so callers keep NaN through their other operand (GELU's x).
        t = Avx512F.Min(Avx512F.Max(t, Vector512.Create(-87.3f)), Vector512.Create(88f));
        var n = Avx512F.RoundScale(t * Vector512.Create(1.44269504f), 0);
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), t);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(1.9875691500e-4f), r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        p = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        var scale = ((Avx512F.ConvertToVector512Int32(n) + Vector512.Create(127)) << 23).AsSingle();
        return p * scale;
    }

    // Abramowitz–Stegun 7.1.26 is too coarse for 1e-6; use the series/continued fraction via double precision.
    private static double Erf(double x)
    {
        var t = 1.0 / (1.0 + 0.5 * Math.Abs(x));
        var y = 1 - t * Math.Exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
            t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? y : -y;
    }

    /// <summary>Rotary embedding over the last axis of x [..., s, d]; cos/sin are [s, d/2] (leading 1s allowed).</summary>
    public static Tensor Rotary(Tensor x, Tensor cos, Tensor sin, bool interleaved)
    {
        RequireF32(Operators.KilnOp.RotaryEmbedding, x, cos, sin);
        if (x.Rank < 2) throw new KernelException($"RotaryEmbedding needs x of rank ≥ 2, got {x}");
        int d = x.Shape[^1], half = d / 2;
        var (axis, bad) = RotaryPositionAxis(x.Rank, cos.Shape.Select(v => v == 1 ? "1" : "n").ToArray());
        var s = axis < 0 ? 1 : x.Shape[axis];
        var inner = 1;
        for (var i = axis + 1; axis >= 0 && i < x.Rank - 1; i++) inner *= x.Shape[i];
        if (bad is not null || d % 2 != 0 || cos.Shape[^1] != half || cos.Length != (long)s * half || !sin.Shape.SequenceEqual(cos.Shape))
            throw new KernelException($"RotaryEmbedding: x {x} needs cos/sin of [..., {half}] varying along one axis of x, got {cos} and {sin}{(bad is null ? "" : $" ({bad})")}");
        var r = Tensor.Uninitialized(DType.F32, x.Shape);
        ArenaKernels.Rotary(x.Span<float>(), cos.Span<float>(), sin.Span<float>(), r.Span<float>(), inner, s, d, interleaved);
        return r;
    }

    /// <summary>
    /// The axis of x (rank <paramref name="xRank"/>) along which RotaryEmbedding's cos/sin vary: cos's dims but the
    /// last, right-aligned with x's, must all be "1" except one (the positions); -1 when none varies. Shared by the
    /// evaluator and the code generator, which passes dims as C# expressions ("1" for a constant one).
    /// </summary>
    public static (int Axis, string? Problem) RotaryPositionAxis(int xRank, IReadOnlyList<string> cosDims)
    {
        var lead = cosDims.Count - 1;
        if (lead > xRank - 1) return (-1, "cos has more dims than x");
        var axis = -1;
        for (var i = 0; i < lead; i++)
        {
            if (cosDims[i] == "1") continue;
            if (axis >= 0) return (-1, "cos varies along more than one axis");
            axis = xRank - 1 - lead + i;
        }
        return (axis, null);
    }

    /// <summary>softmax(Q·Kᵀ·scale + mask)·V, query head j reading key/value head j / (heads / kvHeads).</summary>
    /// <param name="kvBits">8: K and V rounded as an int8 KV cache stores them (<see cref="ArenaKernels.QuantizeKvRow"/>), per position and head.</param>
    public static Tensor GroupQueryAttention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, int kvBits = 0)
    {
        RequireF32(Operators.KilnOp.GroupQueryAttention, q, k, v, mask);
        if (kvBits is not (0 or 8 or 32)) throw new KernelException($"GroupQueryAttention: kv_bits={kvBits} (0 or 32: f32, 8: int8 cache)");
        if (kvBits == 8 && k.Rank == 4 && v.Rank == 4)
        {
            k = Tensor.FromArray(DType.F32, k.Shape, k.Span<float>().ToArray());
            v = Tensor.FromArray(DType.F32, v.Shape, v.Span<float>().ToArray());
            ArenaKernels.RoundKvRows(k.Span<float>(), k.Shape[3]);
            ArenaKernels.RoundKvRows(v.Span<float>(), v.Shape[3]);
        }
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4) throw new KernelException($"GroupQueryAttention needs rank-4 Q, K, V, got {q}, {k}, {v}");
        int b = q.Shape[0], h = q.Shape[1], s = q.Shape[2], d = q.Shape[3], kvh = k.Shape[1], t = k.Shape[2];
        if (k.Shape[0] != b || v.Shape[0] != b || v.Shape[1] != kvh || v.Shape[2] != t || k.Shape[3] != d || v.Shape[3] != d || kvh == 0 || h % kvh != 0)
            throw new KernelException($"GroupQueryAttention shapes do not agree: Q {q}, K {k}, V {v}");
        var r = Tensor.Zeros(DType.F32, [b, h, s, d]);
        long[] ms = [0, 0, 0, 0];
        if (mask is not null)
        {
            var mshape = Enumerable.Repeat(1, 4 - mask.Rank).Concat(mask.Shape).ToArray();
            Broadcast.Shape(mshape, [b, h, s, t]);
            ms = Broadcast.StridesFor(mshape, [b, h, s, t]);
        }
        ArenaKernels.Attention(q.Span<float>(), k.Span<float>(), v.Span<float>(), mask is null ? default : mask.Span<float>(), ms[0], ms[1], ms[2], ms[3],
            r.Span<float>(), b, h, s, d, kvh, t, t * d, scale);
        return r;
    }

    /// <summary>A·B + C (C broadcast to the product), then the activation; B is a 2-D weight (its packed form is cached when persistent).</summary>
    public static Tensor MatMulAdd(Tensor a, Tensor b, Tensor c, string activation)
    {
        RequireF32(Operators.KilnOp.MatMulAdd, a, b, c);
        if (a.Rank < 2 || b.Rank != 2 || a.Shape[^1] != b.Shape[0]) throw new KernelException($"MatMulAdd shapes do not agree: {a} × {b}");
        int k = a.Shape[^1], n = b.Shape[1];
        var m = (int)(a.Length / k);
        int[] product = [.. a.Shape[..^1], n];
        var outShape = Broadcast.Shape(product, c.Shape);
        if (!outShape.AsSpan().SequenceEqual(product)) throw new KernelException($"MatMulAdd: C {c} would grow the product {string.Join("×", product)}");
        var full = c.Shape.AsSpan().SequenceEqual(product) ? c : Movement.Expand(c, product);
        var r = Tensor.Uninitialized(DType.F32, product);
        ArenaKernels.MatMulAdd(a.Span<float>(), b.Span<float>(), b, full.Span<float>(), r.Span<float>(), m, n, k, activation);
        return r;
    }
}
