namespace Kiln.Runtime.Kernels;

/// <summary>Einsum by direct summation over every label (explicit or implicit output, ellipsis broadcasting).</summary>
public static class Einsum
{
    public static Tensor Run(string equation, IReadOnlyList<Tensor> xs)
    {
        var eq = equation.Replace(" ", "");
        var arrow = eq.IndexOf("->", StringComparison.Ordinal);
        var lhs = arrow >= 0 ? eq[..arrow] : eq;
        var terms = lhs.Split(',');
        if (terms.Length != xs.Count) throw new KernelException($"Einsum equation '{equation}' has {terms.Length} operands, got {xs.Count} inputs");
        // Ellipsis dims get labels '0'..'9' (right-aligned across operands).
        var ellRank = 0;
        for (var i = 0; i < terms.Length; i++)
            if (terms[i].Contains("...")) ellRank = Math.Max(ellRank, xs[i].Rank - (terms[i].Length - 3));
        var ell = string.Concat(Enumerable.Range(0, ellRank).Select(k => (char)('0' + k)));
        var labels = new string[terms.Length];
        for (var i = 0; i < terms.Length; i++)
        {
            var t = terms[i];
            if (t.Contains("..."))
            {
                var own = xs[i].Rank - (t.Length - 3);
                t = t.Replace("...", ell[(ellRank - own)..]);
            }
            if (t.Length != xs[i].Rank) throw new KernelException($"Einsum term '{terms[i]}' does not match a rank-{xs[i].Rank} input");
            labels[i] = t;
        }
        string output;
        if (arrow >= 0) output = eq[(arrow + 2)..].Replace("...", ell);
        else
        {
            var all = string.Concat(labels);
            output = ell + string.Concat(all.Where(ch => !char.IsDigit(ch) && all.Count(x => x == ch) == 1).Distinct().Order());
        }
        var size = new Dictionary<char, int>();
        for (var i = 0; i < labels.Length; i++)
            for (var k = 0; k < labels[i].Length; k++)
            {
                var d = xs[i].Shape[k];
                if (size.TryGetValue(labels[i][k], out var e) && e != d && e != 1 && d != 1)
                    throw new KernelException($"Einsum label '{labels[i][k]}' has sizes {e} and {d}");
                size[labels[i][k]] = Math.Max(d, e);
            }
        var summed = size.Keys.Where(ch => !output.Contains(ch)).ToArray();
        var outShape = output.Select(ch => size[ch]).ToArray();
        var loop = output.Concat(summed).ToArray();
        var loopShape = loop.Select(ch => size[ch]).ToArray();
        var values = xs.Select(x => x.ToDoubles()).ToArray();
        var strides = xs.Select((x, i) =>
        {
            var s = Tensor.Strides(x.Shape);
            return loop.Select(ch =>
            {
                long acc = 0;
                for (var k = 0; k < labels[i].Length; k++)
                    if (labels[i][k] == ch && x.Shape[k] != 1) acc += s[k];
                return acc;
            }).ToArray();
        }).ToArray();
        var result = new double[Tensor.Count(outShape)];
        var sumCount = Tensor.Count(summed.Select(ch => size[ch]).ToArray());
        var idx = new int[loop.Length];
        var total = Tensor.Count(loopShape);
        for (long flat = 0; flat < total; flat++)
        {
            Convolution.Unflatten(flat, loopShape, idx);
            double prod = 1;
            for (var i = 0; i < xs.Count; i++)
            {
                long off = 0;
                for (var k = 0; k < loop.Length; k++) off += idx[k] * strides[i][k];
                prod *= values[i][off];
            }
            result[flat / Math.Max(1, sumCount)] += prod;
        }
        return Movement.FromDoubles(xs[0].Type, outShape, result);
    }
}
