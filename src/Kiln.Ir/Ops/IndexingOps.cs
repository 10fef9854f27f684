using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Gather/Scatter family, OneHot, NonZero, Compress, TopK, Unique, ReverseSequence.</summary>
internal static class IndexingOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("Gather", "data, indices", "output", "axis:int=0", GatherRule);
        r.Add("GatherElements", "data, indices", "output", "axis:int=0", c => c.Set(0, c.Elem(0), c.ShapeOf(1)), since: 11);
        r.Add("GatherND", "data, indices", "output", "batch_dims:int=0", GatherNDRule, since: 11);
        r.Add("ScatterElements", "data, indices, updates", "output", "axis:int=0, reduction:string=none", Rules.SameAsInput, since: 11);
        r.Add("Scatter", "data, indices, updates", "output", "axis:int=0", Rules.SameAsInput, c => c.Op = "ScatterElements", since: 9);
        r.Add("ScatterND", "data, indices, updates", "output", "reduction:string=none", Rules.SameAsInput, since: 11);
        r.Add("OneHot", "indices, depth, values", "output", "axis:int=-1", OneHotRule, since: 9);
        r.Add("NonZero", "X", "Y", "", c => c.Set(0, DType.I64, c.ShapeOf(0) is { } s ? new Shape([Dim.Const(s.Rank), Dim.Unknown]) : null), since: 9);
        r.Add("Compress", "input, condition", "output", "axis:int?", c =>
        {
            var s = c.ShapeOf(0);
            if (c.OptInt("axis") is not { } axis || s is null) { c.Set(0, c.Elem(0), [Dim.Unknown]); return; }
            var a = c.Axis(axis, s.Rank);
            c.Set(0, c.Elem(0), s.Dims.Select((d, i) => i == a ? Dim.Unknown : d));
        }, since: 9);
        r.Add("TopK", "X, K", "Values, Indices", "axis:int=-1, largest:int=1, sorted:int=1", TopKRule, c =>
        {
            if (c.Opset < 10 && c.Take<IntAttr>("k") is { } k) c.SetInput(1, c.Int64Constant([k.Value], "k"));
        });
        r.Add("Unique", "X", "Y, indices?, inverse_indices?, counts?", "axis:int?, sorted:int=1", c =>
        {
            var s = c.ShapeOf(0);
            if (c.OptInt("axis") is { } axis && s is not null)
            {
                var a = c.Axis(axis, s.Rank);
                c.Set(0, c.Elem(0), s.Dims.Select((d, i) => i == a ? Dim.Unknown : d));
            }
            else c.Set(0, c.Elem(0), [Dim.Unknown]);
            c.Set(1, DType.I64, [Dim.Unknown]);
            c.Set(2, DType.I64, [Dim.Unknown]);
            c.Set(3, DType.I64, [Dim.Unknown]);
        }, since: 11);
        r.Add("ReverseSequence", "input, sequence_lens", "Y", "batch_axis:int=1, time_axis:int=0", Rules.SameAsInput, since: 10);
    }

    private static void GatherRule(InferenceContext c)
    {
        var data = c.ShapeOf(0);
        var idx = c.ShapeOf(1);
        if (data is null || idx is null) { c.Set(0, c.Elem(0), (Shape?)null); return; }
        var axis = c.Axis(c.Int("axis"), data.Rank);
        var dims = data.Dims.Take(axis).Concat(idx.Dims).Concat(data.Dims.Skip(axis + 1)).ToArray();
        c.Set(0, c.Elem(0), dims);
        if (c.Known(0) is { } k && k.Shape.Length == 1 && c.KnownInts(1) is { } indices)
        {
            var n = k.Values.Length;
            var picked = new Dim[indices.Length];
            for (var i = 0; i < indices.Length; i++)
            {
                var j = indices[i] < 0 ? indices[i] + n : indices[i];
                if (j < 0 || j >= n) throw c.Fail($"index {indices[i]} is out of range for {n} elements");
                picked[i] = k.Values[j];
            }
            c.SetKnown(0, new SymbolicTensor(k.Elem, idx.ToConcrete() ?? [indices.Length], picked));
        }
    }

    private static void GatherNDRule(InferenceContext c)
    {
        var data = c.ShapeOf(0);
        var idx = c.ShapeOf(1);
        if (data is null || idx is null || idx[idx.Rank - 1].Value is not { } last) { c.Set(0, c.Elem(0), (Shape?)null); return; }
        var b = (int)c.Int("batch_dims");
        var dims = idx.Dims.Take(idx.Rank - 1).Concat(data.Dims.Skip(b + (int)last));
        c.Set(0, c.Elem(0), dims);
    }

    private static void OneHotRule(InferenceContext c)
    {
        var idx = c.ShapeOf(0);
        var elem = c.Elem(2);
        if (idx is null) { c.Set(0, elem, (Shape?)null); return; }
        var depth = c.Known(1)?.Values[0] ?? Dim.Unknown;
        var rank = idx.Rank + 1;
        var axis = c.Axis(c.Int("axis"), rank);
        var dims = idx.Dims.ToList();
        dims.Insert(axis, depth);
        c.Set(0, elem, dims);
    }

    private static void TopKRule(InferenceContext c)
    {
        var s = c.ShapeOf(0);
        if (s is null) { c.Set(0, c.Elem(0), (Shape?)null); c.Set(1, DType.I64, (Shape?)null); return; }
        var axis = c.Axis(c.Int("axis"), s.Rank);
        var k = c.Known(1)?.Values[0] ?? Dim.Unknown;
        var dims = s.Dims.Select((d, i) => i == axis ? k : d).ToArray();
        c.Set(0, c.Elem(0), dims);
        c.Set(1, DType.I64, dims);
    }
}
