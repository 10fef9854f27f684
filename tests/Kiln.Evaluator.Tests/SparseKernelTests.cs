using Kiln.Runtime;
using Kiln.Runtime.Kernels;
using Kiln.Runtime.Weights;

namespace Kiln.Evaluator.Tests;

/// <summary>
/// The sparse weight format (bitmask panels) and its kernels: packing round-trips exactly, a corrupted matrix is
/// refused, and every path (decode rows, prefill rows, portable) matches a double-precision product with the dense
/// weight, with and without accumulation, over shapes with partial panels, odd inputs and several 256-input blocks.
/// </summary>
public sealed class SparseKernelTests
{
    private static float[] Sparse(int n, double density, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.NextDouble() < density ? (float)(rng.NextDouble() * 2 - 1) : 0f).ToArray();
    }

    public static TheoryData<int, int, double> Shapes => new()
    {
        // rows (outputs), columns (inputs), density
        { 1, 1, 1.0 },
        { 31, 7, 0.5 },
        { 32, 16, 0.5 },
        { 33, 17, 0.3 },
        { 64, 300, 0.5 },    // two 256-input blocks in prefill
        { 100, 513, 0.25 },
        { 40, 64, 0.0 },     // every weight zero
        { 70, 96, 1.0 },     // no zero at all
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Packing_round_trips(int rows, int columns, double density)
    {
        var w = Sparse(rows * columns, density, rows + columns);
        var m = SparseWeights.Pack(w, SparseLayout.Create(rows, columns));
        Assert.Equal(w, m.Densify());
        Assert.Equal(w.Count(v => v != 0), m.NonZeros);
        Assert.Equal(m.Layout.TotalBytes(m.NonZeros), m.Masks.Length * 4L + m.Values.Length * 4L + m.PanelStarts.Length * 4L);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Every_path_matches_a_double_product(int rows, int columns, double density)
    {
        var w = Sparse(rows * columns, density, rows * 7 + columns);
        var l = SparseLayout.Create(rows, columns);
        var s = SparseWeights.Pack(w, l);
        foreach (var m in new[] { 1, 2, 4, 5, 9, 130 })
        {
            var x = Sparse(m * columns, 1.0, m);
            var start = Sparse(m * rows, 1.0, m + 100);
            foreach (var portable in new[] { false, true })
                foreach (var accumulate in new[] { false, true })
                {
                    var y = (float[])start.Clone();
                    SparseMatMul.Multiply(x, m, l, s.Masks, s.Values, s.PanelStarts, y, accumulate, portable);
                    AssertProduct(w, x, start, y, m, rows, columns, accumulate, $"{rows}×{columns} density {density}, m={m}, portable={portable}");
                }
        }
    }

    public static TheoryData<int, int, int, double> CodeShapes => new()
    {
        // rows, columns, group (0: one per output), density
        { 31, 64, 32, 0.5 },
        { 33, 100, 64, 0.5 },    // a partial last group
        { 64, 300, 0, 0.3 },     // per output, past one 256-input block
        { 40, 96, 32, 0.0 },
        { 70, 17, 0, 1.0 },
    };

    [Theory]
    [MemberData(nameof(CodeShapes))]
    public void Int8_codes_pack_round_trip_and_every_path_matches_a_double_product(int rows, int columns, int group, double density)
    {
        var q = QuantizedWeights.Pack(Sparse(rows * columns, density, rows + group), QuantizedLayout.Create(8, rows, columns, group, true));
        var w = q.Dequantize();
        var s = SparseWeights.PackCodes(q);
        Assert.Equal(w, s.Densify());
        Assert.Equal(w.Count(v => v != 0), s.NonZeros);
        foreach (var m in new[] { 1, 3, 6, 130 })
        {
            var x = Sparse(m * columns, 1.0, m);
            var start = Sparse(m * rows, 1.0, m + 100);
            foreach (var portable in new[] { false, true })
                foreach (var accumulate in new[] { false, true })
                {
                    var y = (float[])start.Clone();
                    SparseMatMul.Multiply(x, m, s.Layout, s.Masks, s.Codes, s.PanelStarts, s.Scales, y, accumulate, portable);
                    AssertProduct(w, x, start, y, m, rows, columns, accumulate, $"int8 {rows}×{columns} g{group} density {density}, m={m}, portable={portable}");
                }
        }
    }

    private static void AssertProduct(float[] w, float[] x, float[] start, float[] y, int m, int rows, int columns, bool accumulate, string what)
    {
        for (var i = 0; i < m; i++)
            for (var r = 0; r < rows; r++)
            {
                var expected = accumulate ? (double)start[i * rows + r] : 0;
                var scale = 1.0;
                for (var k = 0; k < columns; k++)
                {
                    expected += (double)x[i * columns + k] * w[r * columns + k];
                    scale += Math.Abs((double)x[i * columns + k] * w[r * columns + k]);
                }
                Assert.True(Math.Abs(y[i * rows + r] - expected) <= 1e-5 * scale, $"{what}, accumulate={accumulate}: y[{i}, {r}] = {y[i * rows + r]}, expected {expected}");
            }
    }

    [Fact]
    public void A_matrix_whose_parts_disagree_is_refused()
    {
        var l = SparseLayout.Create(33, 5);
        var s = SparseWeights.Pack(Sparse(33 * 5, 0.5, 3), l);
        var starts = (int[])s.PanelStarts.Clone();
        starts[1]++;
        Assert.Contains("panel 1 starts", Assert.Throws<KernelException>(() => SparseWeights.Check(l, s.Masks, s.Values.Length, starts, 0)).Message);
        var masks = (uint[])s.Masks.Clone();
        masks[^1] |= 1u << 5; // output 37 of a 33-row matrix
        Assert.Contains("past the last", Assert.Throws<KernelException>(() => SparseWeights.Check(l, masks, s.Values.Length, s.PanelStarts, 0)).Message);
        Assert.Throws<KernelException>(() => SparseWeights.Check(l, s.Masks, s.Values.Length - 1, s.PanelStarts, 0));
    }
}
