using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>MatMul, Gemm, their integer and quantized forms, Einsum and Det.</summary>
internal static class MatMulOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("MatMul", "A, B", "Y", "", c => c.Set(0, c.Elem(0), MatMulShape(c, c.ShapeOf(0), c.ShapeOf(1)))).With(OpTraits.RowIndependent);
        r.Add("Gemm", "A, B, C?", "Y", "alpha:float=1.0, beta:float=1.0, transA:int=0, transB:int=0", GemmRule, c =>
        {
            ElementwiseOps.DropLegacy(c);
            c.Attributes.Remove("broadcast");
        }).With(OpTraits.RowIndependent);
        r.Add("MatMulInteger", "A, B, a_zero_point?, b_zero_point?", "Y", "",
            c => c.Set(0, DType.I32, MatMulShape(c, c.ShapeOf(0), c.ShapeOf(1))), since: 10);
        r.Add("QLinearMatMul", "a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point", "y", "",
            c => c.Set(0, c.Elem(7), MatMulShape(c, c.ShapeOf(0), c.ShapeOf(3))), since: 10);
        r.Add("Einsum", "Inputs*", "Output", "equation:string!", EinsumRule, since: 12);
        r.Add("Det", "X", "Y", "", c =>
        {
            var s = c.RankedShape(0);
            if (s.Rank < 2) throw c.Fail($"Det needs rank ≥ 2, not {s}");
            c.Set(0, c.Elem(0), s.Dims.Take(s.Rank - 2));
        }, since: 11);
    }

    /// <summary>numpy.matmul shapes: 1-D operands are promoted and the added dim removed; batch dims broadcast.</summary>
    internal static Shape? MatMulShape(InferenceContext c, Shape? a, Shape? b)
    {
        if (a is null || b is null) return null;
        if (a.Rank == 0 || b.Rank == 0) throw c.Fail("MatMul operands must not be scalars");
        var aDims = a.Rank == 1 ? new[] { Dim.One, a[0] } : a.Dims.ToArray();
        var bDims = b.Rank == 1 ? new[] { b[0], Dim.One } : b.Dims.ToArray();
        var k1 = aDims[^1];
        var k2 = bDims[^2];
        if (k1.IsConstant && k2.IsConstant && k1.Value != k2.Value)
            throw c.Fail($"inner dimensions differ: {a} × {b} ({k1} vs {k2})");
        var batch = Rules.Broadcast(c, new Shape(aDims[..^2]), new Shape(bDims[..^2]))!;
        var dims = batch.Dims.ToList();
        if (a.Rank != 1) dims.Add(aDims[^2]);
        if (b.Rank != 1) dims.Add(bDims[^1]);
        return new Shape(dims);
    }

    private static void GemmRule(InferenceContext c)
    {
        var a = c.ShapeOf(0);
        var b = c.ShapeOf(1);
        if (a is null || b is null) { c.Set(0, c.Elem(0), (Shape?)null); return; }
        if (a.Rank != 2 || b.Rank != 2) throw c.Fail($"Gemm needs 2-D operands, not {a} and {b}");
        var (m, k1) = c.Int("transA") != 0 ? (a[1], a[0]) : (a[0], a[1]);
        var (k2, n) = c.Int("transB") != 0 ? (b[1], b[0]) : (b[0], b[1]);
        if (k1.IsConstant && k2.IsConstant && k1.Value != k2.Value)
            throw c.Fail($"inner dimensions differ: A {a}{(c.Int("transA") != 0 ? "ᵀ" : "")} × B {b}{(c.Int("transB") != 0 ? "ᵀ" : "")} ({k1} vs {k2})");
        var y = new Shape([m, n]);
        if (c.HasInput(2) && c.ShapeOf(2) is { } cs && Rules.Broadcast(c, y, cs) is { } bc && bc.Rank > 2)
            throw c.Fail($"C {cs} does not broadcast to {y}");
        c.Set(0, c.Elem(0), y);
    }

    private static void EinsumRule(InferenceContext c)
    {
        var eq = c.Str("equation").Replace(" ", "");
        var elem = c.Elem(0);
        var parts = eq.Split("->");
        var lhs = parts[0].Split(',');
        if (lhs.Length != c.InputCount) throw c.Fail($"equation '{eq}' has {lhs.Length} operands for {c.InputCount} inputs");
        var letters = new Dictionary<char, Dim>();
        Dim[]? ellipsis = null;
        for (var i = 0; i < lhs.Length; i++)
        {
            var s = c.ShapeOf(i);
            if (s is null) { c.Set(0, elem, (Shape?)null); return; }
            var term = lhs[i];
            var dots = term.IndexOf("...", StringComparison.Ordinal);
            var named = term.Replace("...", "");
            var ellRank = s.Rank - named.Length;
            var pos = 0;
            for (var k = 0; k < term.Length; k++)
            {
                if (k == dots)
                {
                    var ell = s.Dims.Skip(pos).Take(ellRank).ToArray();
                    ellipsis = ellipsis is null || ellipsis.Length < ell.Length ? ell : ellipsis;
                    pos += ellRank;
                    k += 2;
                    continue;
                }
                var d = s[pos++];
                if (!letters.TryGetValue(term[k], out var prev) || prev.Value == 1) letters[term[k]] = d;
            }
        }
        string rhs;
        if (parts.Length > 1) rhs = parts[1];
        else
        {
            var counts = lhs.SelectMany(t => t.Replace("...", "")).GroupBy(ch => ch).Where(g => g.Count() == 1).Select(g => g.Key).OrderBy(ch => ch);
            rhs = (ellipsis is not null ? "..." : "") + new string(counts.ToArray());
        }
        var dims = new List<Dim>();
        for (var k = 0; k < rhs.Length; k++)
        {
            if (rhs[k] == '.') { dims.AddRange(ellipsis ?? []); k += 2; continue; }
            dims.Add(letters.TryGetValue(rhs[k], out var d) ? d : throw c.Fail($"output letter '{rhs[k]}' is not in the inputs"));
        }
        c.Set(0, elem, dims);
    }
}
