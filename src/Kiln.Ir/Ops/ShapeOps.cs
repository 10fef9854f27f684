using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Ops that rearrange or compute shapes: Shape, Size, Reshape, Flatten, (Un)Squeeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad, ConstantOfShape, Range, Identity.</summary>
internal static class ShapeOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("Identity", "input", "output", "", Rules.SameAsInput).With(OpTraits.View);
        r.Add("Shape", "data", "shape", "start:int=0, end:int?", ShapeRule);
        r.Add("Size", "data", "size", "", c =>
        {
            c.Set(0, DType.I64, Shape.Scalar);
            if (c.ShapeOf(0) is { } s) c.SetKnown(0, SymbolicTensor.Scalar(DType.I64, s.ElementCount()));
        });
        r.Add("Reshape", "data, shape", "reshaped", "allowzero:int=0", ReshapeRule, c =>
        {
            ElementwiseOps.DropLegacy(c);
            if (c.Take<IntsAttr>("shape") is { } s) c.SetInput(1, c.Int64Constant(s.Value, "shape"));
        }).With(OpTraits.View);
        r.Add("Flatten", "input", "output", "axis:int=1", FlattenRule).With(OpTraits.View);
        r.Add("Squeeze", "data, axes?", "squeezed", "", SqueezeRule, AxesToInput(13)).With(OpTraits.View);
        r.Add("Unsqueeze", "data, axes", "expanded", "", UnsqueezeRule, AxesToInput(13)).With(OpTraits.View);
        r.Add("Transpose", "data", "transposed", "perm:ints?", TransposeRule);
        r.Add("Concat", "inputs*", "concat_result", "axis:int!", ConcatRule, c =>
        {
            if (c.Opset < 4 && !c.Attributes.ContainsKey("axis")) c.Attributes["axis"] = new IntAttr(1);
        }).With(OpTraits.AppendsAlongAxis);
        r.Add("Split", "input, split?", "outputs*", "axis:int=0, num_outputs:int?", SplitRule, c =>
        {
            if (c.Opset < 13 && c.Take<IntsAttr>("split") is { } s) c.SetInput(1, c.Int64Constant(s.Value, "split"));
            // From opset 18 an even split names its number of parts.
            if (c.Opset < 18 && c.Input(1) is null && !c.Attributes.ContainsKey("num_outputs"))
                c.Attributes["num_outputs"] = new IntAttr(c.OutputNames.Count);
        });
        r.Add("Slice", "data, starts, ends, axes?, steps?", "output", "", SliceRule, c =>
        {
            if (c.Opset >= 10) return;
            var starts = c.Take<IntsAttr>("starts") ?? throw c.Fail("Slice needs 'starts'");
            var ends = c.Take<IntsAttr>("ends") ?? throw c.Fail("Slice needs 'ends'");
            var axes = c.Take<IntsAttr>("axes");
            c.SetInput(1, c.Int64Constant(starts.Value, "starts"));
            c.SetInput(2, c.Int64Constant(ends.Value, "ends"));
            if (axes is not null) c.SetInput(3, c.Int64Constant(axes.Value, "axes"));
        });
        r.Add("Expand", "input, shape", "output", "", ExpandRule, since: 8);
        r.Add("Tile", "input, repeats", "output", "", TileRule, since: 6);
        r.Add("Pad", "data, pads, constant_value?, axes?", "output", "mode:string=constant", PadRule, PadAdapter);
        r.Add("ConstantOfShape", "input", "output", "value:tensor?", ConstantOfShapeRule, since: 9);
        r.Add("Range", "start, limit, delta", "output", "", RangeRule, since: 11);
        r.Add("DepthToSpace", "input", "output", "blocksize:int!, mode:string=DCR", c => SpaceDepth(c, toSpace: true));
        r.Add("SpaceToDepth", "input", "output", "blocksize:int!", c => SpaceDepth(c, toSpace: false));
    }

    /// <summary>An adapter moving an 'axes' attribute to the second input for opsets before <paramref name="since"/>.</summary>
    private static OpsetAdapter AxesToInput(int since) => c =>
    {
        if (c.Opset < since && c.Take<IntsAttr>("axes") is { } axes) c.SetInput(1, c.Int64Constant(axes.Value, "axes"));
    };

    private static void ShapeRule(InferenceContext c)
    {
        var s = c.ShapeOf(0);
        if (s is null) { c.Set(0, DType.I64, new Shape([Dim.Unknown])); return; }
        var start = Clamp(c.Int("start"), s.Rank);
        var end = c.OptInt("end") is { } e ? Clamp(e, s.Rank) : s.Rank;
        var dims = s.Dims.Skip(start).Take(Math.Max(0, end - start)).ToArray();
        c.Set(0, DType.I64, [Dim.Const(dims.Length)]);
        c.SetKnown(0, SymbolicTensor.Vector(DType.I64, dims));
    }

    private static int Clamp(long v, int rank) => (int)Math.Clamp(v < 0 ? v + rank : v, 0, rank);

    private static void ReshapeRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var target = c.Known(1);
        if (target is null)
        {
            c.Set(0, elem, Rules.ShapeOfLength(c, 1));
            return;
        }
        var shape = Rules.ReshapeTarget(c, c.ShapeOf(0), target, c.Int("allowzero") != 0);
        c.Set(0, elem, shape);
        if (c.Known(0) is { } k && shape.ToConcrete() is { } concrete) c.SetKnown(0, k with { Shape = concrete });
    }

    private static void FlattenRule(InferenceContext c)
    {
        var s = c.RankedShape(0);
        var axis = c.Int("axis");
        if (axis < 0) axis += s.Rank;
        if (axis < 0 || axis > s.Rank) throw c.Fail($"axis {c.Int("axis")} is out of range for rank {s.Rank}");
        var outer = s.Dims.Take((int)axis).Aggregate(Dim.One, (a, b) => a * b);
        var inner = s.Dims.Skip((int)axis).Aggregate(Dim.One, (a, b) => a * b);
        c.Set(0, c.Elem(0), [outer, inner]);
    }

    private static void SqueezeRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var s = c.ShapeOf(0);
        if (s is null) { c.Set(0, elem, (Shape?)null); return; }
        long[]? axes = c.HasInput(1) ? c.KnownInts(1) : null;
        if (c.HasInput(1) && axes is null) { c.Set(0, elem, (Shape?)null); return; }
        HashSet<int> drop;
        if (axes is null)
        {
            if (s.Dims.Any(d => !d.IsConstant)) { c.Set(0, elem, (Shape?)null); return; }
            drop = Enumerable.Range(0, s.Rank).Where(i => s[i].Value == 1).ToHashSet();
        }
        else
        {
            drop = axes.Select(a => c.Axis(a, s.Rank)).ToHashSet();
            foreach (var a in drop)
                if (s[a].IsConstant && s[a].Value != 1) throw c.Fail($"cannot squeeze axis {a} of size {s[a]} in {s}");
        }
        var dims = s.Dims.Where((_, i) => !drop.Contains(i)).ToArray();
        c.Set(0, elem, dims);
        if (c.Known(0) is { } k) c.SetKnown(0, k with { Shape = dims.Select(d => d.Value ?? 0).ToArray() });
    }

    private static void UnsqueezeRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var s = c.ShapeOf(0);
        var axes = c.KnownInts(1);
        if (s is null || axes is null) { c.Set(0, elem, (Shape?)null); return; }
        var rank = s.Rank + axes.Length;
        var set = axes.Select(a => c.Axis(a, rank)).ToHashSet();
        if (set.Count != axes.Length) throw c.Fail("Unsqueeze axes repeat");
        var dims = new Dim[rank];
        var j = 0;
        for (var i = 0; i < rank; i++) dims[i] = set.Contains(i) ? Dim.One : s[j++];
        c.Set(0, elem, dims);
        if (c.Known(0) is { } k) c.SetKnown(0, k with { Shape = dims.Select(d => d.Value ?? 0).ToArray() });
    }

    private static void TransposeRule(InferenceContext c)
    {
        var s = c.ShapeOf(0);
        if (s is null) { c.Set(0, c.Elem(0), (Shape?)null); return; }
        var perm = c.Ints("perm") ?? Enumerable.Range(0, s.Rank).Reverse().Select(i => (long)i).ToArray();
        if (perm.Length != s.Rank || perm.Distinct().Count() != perm.Length || perm.Any(p => p < 0 || p >= s.Rank))
            throw c.Fail($"perm [{string.Join(", ", perm)}] is not a permutation of rank {s.Rank}");
        c.Set(0, c.Elem(0), perm.Select(p => s[(int)p]));
    }

    private static void ConcatRule(InferenceContext c)
    {
        var inputs = Enumerable.Range(0, c.InputCount).Where(c.HasInput).ToList();
        var elem = c.Elem(inputs[0]);
        var shapes = inputs.Select(c.ShapeOf).ToList();
        var known = shapes.FirstOrDefault(s => s is not null);
        if (known is null) { c.Set(0, elem, (Shape?)null); return; }
        var axis = c.Axis(c.Int("axis"), known.Rank);
        var dims = known.Dims.ToArray();
        var total = Dim.Zero;
        foreach (var (s, idx) in shapes.Select((s, k) => (s, k)))
        {
            if (c.Elem(inputs[idx]) != elem) throw c.Fail($"input {inputs[idx]} is {c.Elem(inputs[idx]).Name()} but input 0 is {elem.Name()}");
            if (s is null) { total = Dim.Unknown; continue; }
            if (s.Rank != known.Rank) throw c.Fail($"inputs have ranks {known.Rank} and {s.Rank}");
            for (var i = 0; i < dims.Length; i++)
            {
                if (i == axis) continue;
                if (dims[i].IsConstant && s[i].IsConstant && dims[i].Value != s[i].Value)
                    throw c.Fail($"inputs {known} and {s} differ outside axis {axis}");
                if (dims[i].IsUnknown) dims[i] = s[i];
            }
            total += s[axis];
        }
        dims[axis] = total;
        c.Set(0, elem, dims);
        var values = inputs.Select(c.Known).ToList();
        if (known.Rank == 1 && values.All(v => v is not null))
            c.SetKnown(0, SymbolicTensor.Vector(elem, values.SelectMany(v => v!.Values).ToArray()));
    }

    private static void SplitRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var s = c.ShapeOf(0);
        var n = c.OutputCount;
        if (s is null) { for (var i = 0; i < n; i++) c.Set(i, elem, (Shape?)null); return; }
        var axis = c.Axis(c.Int("axis"), s.Rank);
        Dim[] sizes;
        if (c.HasInput(1))
        {
            var split = c.KnownInts(1);
            sizes = split is null ? Enumerable.Repeat(Dim.Unknown, n).ToArray() : split.Select(Dim.Const).ToArray();
            if (split is not null && split.Length != n) throw c.Fail($"split has {split.Length} sizes for {n} outputs");
            if (split is not null && s[axis].Value is { } total && split.Sum() != total) throw c.Fail($"split sizes sum to {split.Sum()}, not {total}");
        }
        else
        {
            var parts = c.OptInt("num_outputs") ?? n;
            if (s[axis].Value is { } len)
            {
                var chunk = (len + parts - 1) / parts;
                sizes = Enumerable.Range(0, n).Select(i => Dim.Const(Math.Max(0, Math.Min(chunk, len - i * chunk)))).ToArray();
            }
            else sizes = Enumerable.Range(0, n).Select(_ => Dim.ExactDivide(s[axis], parts) ?? Dim.Unknown).ToArray();
        }
        for (var i = 0; i < n; i++)
            c.Set(i, elem, s.Dims.Select((d, k) => k == axis ? sizes[i] : d));
    }

    private static void SliceRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var s = c.ShapeOf(0);
        if (s is null) { c.Set(0, elem, (Shape?)null); return; }
        var starts = c.Known(1)?.Values;
        var ends = c.Known(2)?.Values;
        var axes = c.HasInput(3) ? c.KnownInts(3) : starts is null ? null : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        var steps = c.HasInput(4) ? c.KnownInts(4) : starts is null ? null : Enumerable.Repeat(1L, starts.Length).ToArray();
        if (starts is null || ends is null || axes is null || steps is null)
        {
            // Without known bounds, the sliced axes (given, or the first len(starts) when absent) become unknown.
            var sliced = axes ?? (c.HasInput(3) ? null : c.ShapeOf(1) is { Rank: 1 } ss && ss[0].Value is { } len ? Enumerable.Range(0, (int)len).Select(i => (long)i).ToArray() : null);
            var unknownAxes = sliced?.Select(a => c.Axis(a, s.Rank)).ToHashSet();
            c.Set(0, elem, s.Dims.Select((d, i) => unknownAxes is null || unknownAxes.Contains(i) ? Dim.Unknown : d));
            return;
        }
        if (starts.Length != ends.Length || axes.Length != starts.Length || steps.Length != starts.Length)
            throw c.Fail("starts, ends, axes and steps differ in length");
        var dims = s.Dims.ToArray();
        long firstStart = 0, firstStep = 1;
        for (var i = 0; i < axes.Length; i++)
        {
            var axis = c.Axis(axes[i], s.Rank);
            if (steps[i] == 0) throw c.Fail("slice step is 0");
            var (len, start) = SliceLength(dims[axis], starts[i], ends[i], steps[i]);
            dims[axis] = len;
            if (axis == 0) { firstStart = start ?? -1; firstStep = steps[i]; }
        }
        c.Set(0, elem, dims);
        if (c.Known(0) is { } k && k.Shape.Length == 1 && dims[0].Value is { } n && firstStart >= 0)
        {
            var vals = new Dim[n];
            for (var j = 0; j < n; j++) vals[j] = k.Values[firstStart + j * firstStep];
            c.SetKnown(0, SymbolicTensor.Vector(k.Elem, vals));
        }
    }

    /// <summary>
    /// Length of a slice of a dim, and its clamped start when known. Exact for numbers; for symbolic bounds with step 1
    /// the bounds are taken to lie inside the dim (as exported models use them: x[past:past+seq], x[:, -k:]).
    /// </summary>
    internal static (Dim Len, long? Start) SliceLength(Dim size, Dim startDim, Dim endDim, long step)
    {
        const long huge = int.MaxValue;
        if (size.Value is { } n && startDim.Value is { } start && endDim.Value is { } end)
        {
            long Clamp(long v, long lo, long hi) => Math.Clamp(v < 0 ? v + n : v, lo, hi);
            long s, e;
            if (step > 0) { s = Clamp(start, 0, n); e = Clamp(end, 0, n); }
            else { s = Clamp(start, -1, n - 1); e = Clamp(end, -1, n - 1); }
            var len = step > 0 ? Math.Max(0, (e - s + step - 1) / step) : Math.Max(0, (s - e - step - 1) / -step);
            return (Dim.Const(len), s);
        }
        if (step != 1 || size.IsUnknown || startDim.IsUnknown || endDim.IsUnknown) return (Dim.Unknown, null);
        var st = startDim.Value is < 0 ? size + startDim : startDim;
        var en = endDim.Value is >= huge ? size : endDim.Value is < 0 ? size + endDim : endDim;
        var length = en - st;
        return (length.Value is < 0 ? Dim.Zero : length, st.Value);
    }

    private static void ExpandRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var target = Rules.ShapeFromKnown(c, 1);
        var s = c.ShapeOf(0);
        if (target is null)
        {
            var len = Rules.ShapeOfLength(c, 1);
            c.Set(0, elem, len is null || s is null ? null : new Shape(Enumerable.Repeat(Dim.Unknown, Math.Max(len.Rank, s.Rank))));
            return;
        }
        c.Set(0, elem, Rules.Broadcast(c, s, target));
        if (c.Known(0) is { } k && Rules.Broadcast(c, s, target)?.ToConcrete() is { } concrete)
        {
            var count = concrete.Aggregate(1L, (a, b) => a * b);
            if (count <= SymbolicTensor.MaxElements && k.Values.Length == 1)
                c.SetKnown(0, new SymbolicTensor(k.Elem, concrete, Enumerable.Repeat(k.Values[0], (int)count).ToArray()));
        }
    }

    private static void TileRule(InferenceContext c)
    {
        var s = c.RankedShape(0);
        var reps = c.KnownInts(1);
        c.Set(0, c.Elem(0), reps is null ? s.Dims.Select(_ => Dim.Unknown) : s.Dims.Select((d, i) => d * reps[i]));
    }

    private static void PadRule(InferenceContext c)
    {
        var s = c.RankedShape(0);
        var pads = c.KnownInts(1);
        if (pads is null) { c.Set(0, c.Elem(0), s.Dims.Select(_ => Dim.Unknown)); return; }
        var axes = c.HasInput(3) ? c.KnownInts(3) : Enumerable.Range(0, s.Rank).Select(i => (long)i).ToArray();
        if (axes is null) { c.Set(0, c.Elem(0), s.Dims.Select(_ => Dim.Unknown)); return; }
        if (pads.Length != 2 * axes.Length) throw c.Fail($"pads has {pads.Length} values for {axes.Length} axes");
        var dims = s.Dims.ToArray();
        for (var i = 0; i < axes.Length; i++)
        {
            var a = c.Axis(axes[i], s.Rank);
            dims[a] = dims[a] + pads[i] + pads[i + axes.Length];
        }
        c.Set(0, c.Elem(0), dims);
    }

    /// <summary>Pad's pads and value were attributes before opset 11 (opset 1 called them 'paddings').</summary>
    private static void PadAdapter(AdapterContext c)
    {
        if (c.Opset >= 11) return;
        var pads = c.Take<IntsAttr>("pads") ?? c.Take<IntsAttr>("paddings") ?? throw c.Fail("Pad needs 'pads'");
        var value = c.Take<FloatAttr>("value")?.Value ?? 0f;
        c.SetInput(1, c.Int64Constant(pads.Value, "pads"));
        var elem = (c.Input(0)?.Type as TensorType)?.Elem ?? DType.F32;
        c.SetInput(2, elem switch
        {
            DType.F64 => c.Constant(TensorData.FromArray(DType.F64, [], new[] { (double)value }), "value"),
            DType.F16 => c.Constant(TensorData.FromArray(DType.F16, [], new[] { (Half)value }), "value"),
            _ => c.FloatConstant([value], "value", scalar: true),
        });
    }

    private static void ConstantOfShapeRule(InferenceContext c)
    {
        var value = c.Attr("value") is TensorAttr t ? t.Value : null;
        var elem = value?.Elem ?? DType.F32;
        var shape = Rules.ShapeFromKnown(c, 0) ?? Rules.ShapeOfLength(c, 0);
        c.Set(0, elem, shape);
        if (value is not null && shape?.ToConcrete() is { } concrete && (elem.IsInteger() || elem == DType.Bool))
        {
            var count = concrete.Aggregate(1L, (a, b) => a * b);
            if (count <= SymbolicTensor.MaxElements)
                c.SetKnown(0, new SymbolicTensor(elem, concrete, Enumerable.Repeat(Dim.Const(value.ToInt64Array()[0]), (int)count).ToArray()));
        }
    }

    private static void RangeRule(InferenceContext c)
    {
        var elem = c.Elem(0);
        var start = c.Known(0)?.Values[0];
        var limit = c.Known(1)?.Values[0];
        var delta = c.Known(2)?.Values[0];
        Dim len = Dim.Unknown;
        if (start is not null && limit is not null && delta?.Value is { } d && d != 0)
        {
            if (start.Value is { } a && limit.Value is { } b) len = Dim.Const(Math.Max(0, (long)Math.Ceiling((double)(b - a) / d)));
            else if (d == 1) len = limit - start;
        }
        c.Set(0, elem, [len]);
        if (len.Value is { } n && n <= SymbolicTensor.MaxElements && start is not null && delta is not null)
            c.SetKnown(0, SymbolicTensor.Vector(elem, Enumerable.Range(0, (int)n).Select(i => start + delta * i).ToArray()));
    }

    private static void SpaceDepth(InferenceContext c, bool toSpace)
    {
        var s = c.RankedShape(0);
        if (s.Rank != 4) throw c.Fail($"input must be rank 4, not {s}");
        var b = c.Int("blocksize");
        var dims = toSpace
            ? new[] { s[0], Dim.ExactDivide(s[1], b * b) ?? Dim.Unknown, s[2] * b, s[3] * b }
            : [s[0], s[1] * (b * b), Dim.ExactDivide(s[2], b) ?? Dim.Unknown, Dim.ExactDivide(s[3], b) ?? Dim.Unknown];
        c.Set(0, c.Elem(0), dims);
    }
}
