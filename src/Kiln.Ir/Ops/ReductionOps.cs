using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>ReduceX (axes as an input, the opset-18 form) and ArgMax/ArgMin.</summary>
internal static class ReductionOps
{
    private static readonly string[] Reduce =
        ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"];

    public static void Register(OpRegistry r)
    {
        foreach (var op in Reduce)
        {
            var axesBecameInput = op == "ReduceSum" ? 13 : 18;
            r.Add(op, "data, axes?", "reduced", "keepdims:int=1, noop_with_empty_axes:int=0", ReduceRule, c =>
            {
                ElementwiseOps.DropLegacy(c);
                if (c.Opset < axesBecameInput && c.Take<IntsAttr>("axes") is { } axes)
                    c.SetInput(1, c.Int64Constant(axes.Value, "axes"));
            });
        }
        r.Add("ArgMax", "data", "reduced", "axis:int=0, keepdims:int=1, select_last_index:int=0", ArgRule);
        r.Add("ArgMin", "data", "reduced", "axis:int=0, keepdims:int=1, select_last_index:int=0", ArgRule);
    }

    private static void ReduceRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var shape = c.ShapeOf(0);
        var keep = c.Int("keepdims") != 0;
        if (shape is null) { c.Set(0, elem, (Shape?)null); return; }
        long[]? axes;
        if (c.HasInput(1))
        {
            axes = c.KnownInts(1);
            if (axes is null)
            {
                c.Set(0, elem, keep ? new Shape(Enumerable.Repeat(Dim.Unknown, shape.Rank)) : null);
                return;
            }
        }
        else axes = [];
        if (axes.Length == 0)
        {
            if (c.Int("noop_with_empty_axes") != 0) { c.Set(0, c.InputType(0)); return; }
            axes = Enumerable.Range(0, shape.Rank).Select(i => (long)i).ToArray();
        }
        var set = axes.Select(a => c.Axis(a, shape.Rank)).ToHashSet();
        var dims = new List<Dim>();
        for (var i = 0; i < shape.Rank; i++)
        {
            if (!set.Contains(i)) dims.Add(shape[i]);
            else if (keep) dims.Add(Dim.One);
        }
        c.Set(0, elem, dims);
    }

    private static void ArgRule(InferenceContext c)
    {
        var shape = c.ShapeOf(0);
        if (shape is null) { c.Set(0, DType.I64, (Shape?)null); return; }
        var axis = c.Axis(c.Int("axis"), shape.Rank);
        var keep = c.Int("keepdims") != 0;
        var dims = shape.Dims.Select((d, i) => i == axis ? (keep ? Dim.One : null) : d).OfType<Dim>();
        c.Set(0, DType.I64, dims);
    }
}
