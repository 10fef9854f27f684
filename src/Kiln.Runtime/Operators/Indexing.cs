using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Indexing family: indexing (Gather, Scatter, NonZero, OneHot, TopK, Compress, ReverseSequence, Unique). The ops are declared in Kiln.Ir/Ops/IndexingOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterIndexing(Dictionary<string, Action<OpContext>> d)
    {
        d["NonZero"] = c =>
        {
            var x = c.In(0);
            var hits = new List<long>();
            for (long i = 0; i < x.Length; i++) if (x.Type == DType.String ? x.Strings[i].Length > 0 : x.GetDouble(i) != 0) hits.Add(i);
            var r = new long[x.Rank * hits.Count];
            var strides = Tensor.Strides(x.Shape);
            for (var h = 0; h < hits.Count; h++)
            {
                var rem = hits[h];
                for (var a = 0; a < x.Rank; a++) { r[a * hits.Count + h] = rem / strides[a]; rem %= strides[a]; }
            }
            c.Set(0, Tensor.FromArray(DType.I64, [x.Rank, hits.Count], r));
        };
        d["OneHot"] = c =>
        {
            var ind = c.In(0);
            var depth = (long)c.In(1).GetDouble(0);
            var values = c.In(2);
            var rank = ind.Rank + 1;
            var axis = Movement.NormalizeAxis(c.Int("axis"), rank, "OneHot");
            var shape = ind.Shape.ToList();
            shape.Insert(axis, (int)depth);
            var outer = Tensor.Count(ind.Shape[..axis]);
            var inner = Tensor.Count(ind.Shape[axis..]);
            var idx = new long[outer * depth * inner];
            for (long o = 0; o < outer; o++)
                for (long d2 = 0; d2 < depth; d2++)
                    for (long i = 0; i < inner; i++)
                    {
                        var k = (long)ind.GetDouble(o * inner + i);
                        if (k < 0) k += depth;
                        idx[(o * depth + d2) * inner + i] = k == d2 ? 1 : 0;
                    }
            c.Set(0, Movement.Take(values, shape.ToArray(), idx));
        };
        d["Compress"] = c =>
        {
            var x = c.In(0);
            var cond = c.In(1);
            var keep = Enumerable.Range(0, (int)cond.Length).Where(i => cond.GetLong(i) != 0).Select(i => (long)i).ToArray();
            if (!c.Has("axis"))
            {
                var flat = x.Reshape([(int)x.Length]);
                c.Set(0, Movement.Gather(flat, Tensor.Vector(keep.Where(i => i < x.Length).ToArray()), 0));
                return;
            }
            var axis = Movement.NormalizeAxis(c.Int("axis"), x.Rank, "Compress");
            c.Set(0, Movement.Gather(x, Tensor.Vector(keep.Where(i => i < x.Shape[axis]).ToArray()), axis));
        };
        d["ReverseSequence"] = c =>
        {
            var x = c.In(0);
            var lens = c.In(1).ToLongs();
            var batchAxis = (int)c.Int("batch_axis");
            var timeAxis = (int)c.Int("time_axis");
            var strides = Tensor.Strides(x.Shape);
            var idx = Movement.Indices(x.Shape, o =>
            {
                var t = o[timeAxis];
                var len = lens[o[batchAxis]];
                long src = t < len ? len - 1 - t : t;
                long off = 0;
                for (var i = 0; i < o.Length; i++) off += (i == timeAxis ? src : o[i]) * strides[i];
                return off;
            });
            c.Set(0, Movement.Take(x, x.Shape, idx));
        };
        d["TopK"] = c =>
        {
            var x = c.In(0);
            var k = (int)c.In(1).GetLong(0);
            var axis = Movement.NormalizeAxis(c.Int("axis"), x.Rank, "TopK");
            // Results are always sorted (sorted=0 leaves the order unspecified, so sorted order is valid too).
            var largest = c.Int("largest") != 0;
            var outer = Tensor.Count(x.Shape[..axis]);
            var dim = x.Shape[axis];
            if (k < 0 || k > dim) throw new KernelException($"TopK k={k} is out of range for an axis of {dim}");
            var inner = Tensor.Count(x.Shape[(axis + 1)..]);
            var shape = (int[])x.Shape.Clone();
            shape[axis] = k;
            var take = new long[outer * k * inner];
            var indices = new long[take.Length];
            var v = x.ToDoubles();
            for (long o = 0; o < outer; o++)
                for (long i = 0; i < inner; i++)
                {
                    var order = Enumerable.Range(0, dim).ToArray();
                    var keys = order.Select(j => v[(o * dim + j) * inner + i]).ToArray();
                    Array.Sort(order, (p, q) =>
                    {
                        var cmp = largest ? keys[q].CompareTo(keys[p]) : keys[p].CompareTo(keys[q]);
                        return cmp != 0 ? cmp : p.CompareTo(q);
                    });
                    for (var j = 0; j < k; j++)
                    {
                        var at = (o * k + j) * inner + i;
                        indices[at] = order[j];
                        take[at] = (o * dim + order[j]) * inner + i;
                    }
                }
            c.Set(0, Movement.Take(x, shape, take));
            c.Set(1, Tensor.FromArray(DType.I64, shape, indices));
        };
        d["Unique"] = c =>
        {
            var x = c.In(0);
            int? axis = c.Has("axis") ? Movement.NormalizeAxis(c.Int("axis"), x.Rank, "Unique") : null;
            var (y, idx, inv, counts) = Special.Unique(x, axis, c.Int("sorted") != 0);
            c.Set(0, y);
            if (c.OutputCount > 1) c.Set(1, idx);
            if (c.OutputCount > 2) c.Set(2, inv);
            if (c.OutputCount > 3) c.Set(3, counts);
        };
        d["Gather"] = c => c.Set(0, Movement.Gather(c.In(0), c.In(1), c.Int("axis")));
        d["GatherElements"] = c => c.Set(0, Movement.GatherElements(c.In(0), c.In(1), c.Int("axis")));
        d["GatherND"] = c => c.Set(0, Movement.GatherND(c.In(0), c.In(1), (int)c.Int("batch_dims")));
        d["ScatterElements"] = c => c.Set(0, Movement.ScatterElements(c.In(0), c.In(1), c.In(2), c.Int("axis"), c.Str("reduction")));
        d["Scatter"] = d["ScatterElements"];
        d["ScatterND"] = c => c.Set(0, Movement.ScatterND(c.In(0), c.In(1), c.In(2), c.Str("reduction")));
    }
}
