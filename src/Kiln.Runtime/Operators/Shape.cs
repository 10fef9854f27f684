using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Shape family: ops that rearrange or compute shapes (Reshape, Transpose, Concat, Slice, Pad, Range, …). The ops are declared in Kiln.Ir/Ops/ShapeOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterShape(Dictionary<string, Action<OpContext>> d)
    {
        d["Range"] = c =>
        {
            var s = c.In(0);
            if (s.Type.IsFloat())
            {
                double a = s.GetDouble(0), lim = c.In(1).GetDouble(0), delta = c.In(2).GetDouble(0);
                var n = Math.Max(0, (long)Math.Ceiling((lim - a) / delta));
                var r = Tensor.Uninitialized(DType.F64, [checked((int)n)]);
                var rs = r.Span<double>();
                for (var i = 0; i < rs.Length; i++) rs[i] = a + i * delta;
                c.Set(0, Cast.To(r, s.Type));
            }
            else
            {
                long a = s.GetLong(0), lim = c.In(1).GetLong(0), delta = c.In(2).GetLong(0);
                if (delta == 0) throw new KernelException("Range delta cannot be 0");
                var n = Math.Max(0, (long)Math.Ceiling((lim - a) / (double)delta));
                var r = Tensor.Uninitialized(DType.I64, [checked((int)n)]);
                var rs = r.Span<long>();
                for (var i = 0; i < rs.Length; i++) rs[i] = a + i * delta;
                c.Set(0, Cast.To(r, s.Type));
            }
        };
        d["Identity"] = c => c.Set(0, c.Value(0));
        d["Reshape"] = c =>
        {
            var x = c.In(0);
            var spec = c.In(1).ToLongs();
            var allowZero = c.Int("allowzero") != 0;
            var shape = new int[spec.Length];
            var infer = -1;
            long known = 1;
            for (var i = 0; i < spec.Length; i++)
            {
                if (spec[i] == -1)
                {
                    if (infer >= 0) throw new KernelException("Reshape shape has more than one -1");
                    infer = i;
                    continue;
                }
                if (spec[i] == 0 && !allowZero)
                {
                    if (i >= x.Rank) throw new KernelException($"Reshape shape copies dim {i}, but the input has rank {x.Rank}");
                    shape[i] = x.Shape[i];
                }
                else if (spec[i] < 0) throw new KernelException($"Reshape shape has a negative dim {spec[i]}");
                else shape[i] = checked((int)spec[i]);
                known *= shape[i];
            }
            if (infer >= 0)
            {
                if (known == 0 || x.Length % known != 0) throw new KernelException($"cannot reshape {x} to [{string.Join(", ", spec)}]");
                shape[infer] = (int)(x.Length / known);
            }
            c.Set(0, x.Reshape(shape));
        };
        d["Flatten"] = c =>
        {
            var x = c.In(0);
            var axis = (int)c.Int("axis");
            if (axis < 0) axis += x.Rank;
            if (axis < 0 || axis > x.Rank) throw new KernelException($"Flatten axis {c.Int("axis")} is out of range for rank {x.Rank}");
            var outer = (int)Tensor.Count(x.Shape[..axis]);
            c.Set(0, x.Reshape([outer, (int)Tensor.Count(x.Shape[axis..])]));
        };
        d["Squeeze"] = c =>
        {
            var x = c.In(0);
            var axes = c.Opt(1)?.ToLongs().Select(a => Movement.NormalizeAxis(a, x.Rank, "Squeeze")).ToHashSet();
            if (axes is not null)
                foreach (var a in axes)
                    if (x.Shape[a] != 1) throw new KernelException($"Squeeze axis {a} has size {x.Shape[a]}, not 1");
            c.Set(0, x.Reshape(x.Shape.Where((dim, i) => axes is null ? dim != 1 : !axes.Contains(i)).ToArray()));
        };
        d["Unsqueeze"] = c =>
        {
            var x = c.In(0);
            var axesRaw = c.In(1).ToLongs();
            var rank = x.Rank + axesRaw.Length;
            var axes = axesRaw.Select(a => Movement.NormalizeAxis(a, rank, "Unsqueeze")).ToHashSet();
            if (axes.Count != axesRaw.Length) throw new KernelException("Unsqueeze axes repeat");
            var shape = new int[rank];
            var k = 0;
            for (var i = 0; i < rank; i++) shape[i] = axes.Contains(i) ? 1 : x.Shape[k++];
            c.Set(0, x.Reshape(shape));
        };
        d["Transpose"] = c =>
        {
            var x = c.In(0);
            var perm = c.Ints("perm")?.Select(v => (int)v).ToArray() ?? Enumerable.Range(0, x.Rank).Reverse().ToArray();
            c.Set(0, Movement.Transpose(x, perm));
        };
        d["Concat"] = c => c.Set(0, Movement.Concat(Enumerable.Range(0, c.InputCount).Where(c.HasInput).Select(c.In).ToList(), (int)c.Int("axis")));
        d["Split"] = c =>
        {
            var x = c.In(0);
            var axis = Movement.NormalizeAxis(c.Int("axis"), x.Rank, "Split");
            var sizes = SplitSizes(x.Shape[axis], c.Opt(1)?.ToLongs(), c.OutputCount, c.Has("num_outputs") ? c.Int("num_outputs") : null);
            var start = 0;
            for (var i = 0; i < c.OutputCount; i++)
            {
                c.Set(i, SliceAxis(x, axis, start, start + sizes[i]));
                start += sizes[i];
            }
        };
        d["Slice"] = c =>
        {
            var x = c.In(0);
            var (s, e, st) = Movement.ResolveSlice(x.Shape, c.In(1).ToLongs(), c.In(2).ToLongs(), c.Opt(3)?.ToLongs(), c.Opt(4)?.ToLongs());
            c.Set(0, Movement.Slice(x, s, e, st));
        };
        d["Expand"] = c => c.Set(0, Movement.Expand(c.In(0), Ints32(c.In(1))));
        d["Tile"] = c => c.Set(0, Movement.Tile(c.In(0), c.In(1).ToLongs()));
        d["Pad"] = c =>
        {
            var x = c.In(0);
            var pads = c.In(1).ToLongs();
            if (c.Opt(3) is { } axesT)
            {
                var axes = axesT.ToLongs().Select(a => Movement.NormalizeAxis(a, x.Rank, "Pad")).ToArray();
                var full = new long[2 * x.Rank];
                for (var i = 0; i < axes.Length; i++)
                {
                    full[axes[i]] = pads[i];
                    full[axes[i] + x.Rank] = pads[i + axes.Length];
                }
                pads = full;
            }
            c.Set(0, Movement.Pad(x, pads, c.Str("mode"), c.Opt(2)));
        };
        d["Shape"] = c =>
        {
            var x = c.In(0);
            var rank = x.Rank;
            long start = c.Int("start"), end = c.Has("end") ? c.Int("end") : rank;
            if (start < 0) start += rank;
            if (end < 0) end += rank;
            start = Math.Clamp(start, 0, rank);
            end = Math.Clamp(end, 0, rank);
            c.Set(0, Tensor.Vector(x.Shape.Skip((int)start).Take((int)Math.Max(0, end - start)).Select(v => (long)v).ToArray()));
        };
        d["Size"] = c => c.Set(0, Tensor.Scalar(c.In(0).Length));
        d["ConstantOfShape"] = c =>
        {
            var shape = Ints32(c.In(0));
            var r = Tensor.Zeros(c.TensorAttr("value") is { } v ? v.Type : DType.F32, shape);
            if (c.TensorAttr("value") is { } value && r.Length > 0)
            {
                var fill = value;
                var idx = new long[r.Length];
                Movement.Take(fill, r, idx);
            }
            c.Set(0, r);
        };
        d["DepthToSpace"] = c =>
        {
            var x = c.In(0);
            var b = (int)c.Int("blocksize");
            int n = x.Shape[0], ch = x.Shape[1], h = x.Shape[2], w = x.Shape[3];
            var crd = c.Str("mode") == "CRD";
            var t = crd ? x.Reshape([n, ch / (b * b), b, b, h, w]) : x.Reshape([n, b, b, ch / (b * b), h, w]);
            var p = crd ? Movement.Transpose(t, [0, 1, 4, 2, 5, 3]) : Movement.Transpose(t, [0, 3, 4, 1, 5, 2]);
            c.Set(0, p.Reshape([n, ch / (b * b), h * b, w * b]));
        };
        d["SpaceToDepth"] = c =>
        {
            var x = c.In(0);
            var b = (int)c.Int("blocksize");
            int n = x.Shape[0], ch = x.Shape[1], h = x.Shape[2], w = x.Shape[3];
            var t = Movement.Transpose(x.Reshape([n, ch, h / b, b, w / b, b]), [0, 3, 5, 1, 2, 4]);
            c.Set(0, t.Reshape([n, ch * b * b, h / b, w / b]));
        };
    }

    private static int[] Ints32(Tensor t) => t.ToLongs().Select(v => checked((int)v)).ToArray();


    internal static int[] SplitSizes(int dim, long[]? split, int outputs, long? numOutputs)
    {
        if (split is not null)
        {
            if (split.Sum() != dim) throw new KernelException($"Split sizes [{string.Join(", ", split)}] do not add up to {dim}");
            return split.Select(v => (int)v).ToArray();
        }
        var n = (int)(numOutputs ?? outputs);
        var chunk = (dim + n - 1) / n;
        var sizes = new int[n];
        for (var i = 0; i < n; i++) sizes[i] = Math.Max(0, Math.Min(chunk, dim - i * chunk));
        if (numOutputs is null && dim % n != 0) throw new KernelException($"cannot split {dim} evenly into {n} outputs");
        return sizes;
    }

    internal static Tensor SliceAxis(Tensor x, int axis, int start, int end)
    {
        var s = new int[x.Rank];
        var e = (int[])x.Shape.Clone();
        var st = Enumerable.Repeat(1, x.Rank).ToArray();
        s[axis] = start;
        e[axis] = end;
        return Movement.Slice(x, s, e, st);
    }
}
