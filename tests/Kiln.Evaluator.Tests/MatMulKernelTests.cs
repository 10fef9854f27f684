using Kiln.Runtime;
using Kiln.Runtime.Kernels;

namespace Kiln.Evaluator.Tests;

/// <summary>The GEMM against a plain double-precision loop, on shapes that hit edge tiles, K blocking, threading and the packed-weight cache.</summary>
public sealed class MatMulKernelTests
{
    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 5, 3)]
    [InlineData(37, 53, 71)]
    [InlineData(129, 300, 65)]
    [InlineData(64, 777, 96)]
    [InlineData(1, 288, 288)] // one decode row: the streaming GEMV path (persistent B: its packed panels)
    [InlineData(2, 129, 141)] // odd K, a partial last panel
    [InlineData(3, 300, 1100)] // a few rows, column tail, two threads
    [InlineData(4, 2048, 520)]
    public void Multiply_matches_a_naive_loop(int m, int k, int n)
    {
        var a = Random(m * k, 1);
        var b = Random(k * n, 2);
        foreach (var persistent in new[] { false, true, true })
        {
            var bt = Tensor.Wrap(DType.F32, [k, n], System.Runtime.InteropServices.MemoryMarshal.AsBytes(b.AsSpan()).ToArray(), persistent);
            var r = MatMul.Multiply(Tensor.FromArray(DType.F32, [m, k], a), bt).Span<float>();
            for (var i = 0; i < m; i++)
                for (var j = 0; j < n; j++)
                {
                    double s = 0;
                    for (var p = 0; p < k; p++) s += (double)a[i * k + p] * b[p * n + j];
                    Assert.True(Math.Abs(r[i * n + j] - s) <= 1e-4 * Math.Max(1, Math.Abs(s)), $"[{i},{j}] got {r[i * n + j]}, expected {s}");
                }
        }
    }

    [Fact]
    public void Batched_operands_broadcast_and_transposed_B_packs_correctly()
    {
        var a = Random(3 * 5 * 7, 3);
        var b = Random(7 * 4, 4);
        var r = MatMul.Multiply(Tensor.FromArray(DType.F32, [3, 5, 7], a), Tensor.FromArray(DType.F32, [7, 4], b));
        Assert.Equal([3, 5, 4], r.Shape);
        var bT = new float[4 * 7];
        for (var p = 0; p < 7; p++) for (var j = 0; j < 4; j++) bT[j * 7 + p] = b[p * 4 + j];
        var c = new float[5 * 4];
        MatMul.Gemm(a.AsSpan(2 * 35, 35), 7, false, bT, 7, true, c, 4, 5, 4, 7, false);
        Assert.Equal(r.Span<float>().Slice(2 * 20, 20).ToArray(), c);
    }

    [Theory]
    [InlineData(1, 288, 1001, false)]
    [InlineData(2, 77, 700, true)]
    [InlineData(1, 1024, 2050, true)]
    public void Few_rows_against_transposed_B_accumulate_and_overwrite(int m, int k, int n, bool accumulate)
    {
        var a = Random(m * k, 5);
        var bT = Random(n * k, 6); // [n×k]
        var c0 = Random(m * n, 7);
        var c = (float[])c0.Clone();
        MatMul.Gemm(a, k, false, bT, k, true, c, n, m, n, k, accumulate);
        for (var i = 0; i < m; i++)
            for (var j = 0; j < n; j++)
            {
                double s = accumulate ? c0[i * n + j] : 0;
                for (var p = 0; p < k; p++) s += (double)a[i * k + p] * bT[j * k + p];
                Assert.True(Math.Abs(c[i * n + j] - s) <= 1e-4 * Math.Max(1, Math.Abs(s)), $"[{i},{j}] got {c[i * n + j]}, expected {s}");
            }
    }

    [Theory]
    [InlineData(1, 288, 288)]
    [InlineData(3, 77, 700)] // odd K, a partial last panel, two threads
    [InlineData(4, 1024, 33)]
    public void Few_rows_against_a_persistent_weight_accumulate(int m, int k, int n)
    {
        var a = Random(m * k, 8);
        var b = Random(k * n, 9);
        var c0 = Random(m * n, 10);
        var weights = Tensor.Wrap(DType.F32, [k, n], System.Runtime.InteropServices.MemoryMarshal.AsBytes(b.AsSpan()).ToArray(), persistent: true);
        // Twice: the first call packs the panels, the second reads the cached copy.
        for (var call = 0; call < 2; call++)
        {
            var c = (float[])c0.Clone();
            MatMul.Gemm(a, k, false, weights.Span<float>(), n, false, c, n, m, n, k, accumulate: true, weights, 0);
            for (var i = 0; i < m; i++)
                for (var j = 0; j < n; j++)
                {
                    double s = c0[i * n + j];
                    for (var p = 0; p < k; p++) s += (double)a[i * k + p] * b[p * n + j];
                    Assert.True(Math.Abs(c[i * n + j] - s) <= 1e-4 * Math.Max(1, Math.Abs(s)), $"call {call} [{i},{j}] got {c[i * n + j]}, expected {s}");
                }
        }
    }
}
