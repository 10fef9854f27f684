using System.Globalization;

namespace Kiln.Runtime.Kernels;

/// <summary>Less common ops: window functions, determinants, Unique, StringNormalizer, NonMaxSuppression, MaxUnpool.</summary>
public static class Special
{
    public static Tensor Window(string kind, long size, bool periodic, DType type)
    {
        var n = periodic ? size : size - 1;
        var r = new double[size];
        for (var i = 0; i < size; i++)
        {
            var a = 2 * Math.PI * i / n;
            r[i] = kind switch
            {
                "HannWindow" => 0.5 - 0.5 * Math.Cos(a),
                "HammingWindow" => 25.0 / 46 - (1 - 25.0 / 46) * Math.Cos(a),
                _ => 0.42 - 0.5 * Math.Cos(a) + 0.08 * Math.Cos(2 * a),
            };
        }
        return Movement.FromDoubles(type, [(int)size], r);
    }

    public static Tensor Det(Tensor x)
    {
        var n = x.Shape[^1];
        var batch = (int)(x.Length / Math.Max(1, n * n));
        var v = x.ToDoubles();
        var r = new double[batch];
        for (var b = 0; b < batch; b++)
        {
            var m = v.AsSpan(b * n * n, n * n).ToArray();
            double det = 1;
            for (var col = 0; col < n; col++)
            {
                var piv = col;
                for (var row = col + 1; row < n; row++) if (Math.Abs(m[row * n + col]) > Math.Abs(m[piv * n + col])) piv = row;
                if (m[piv * n + col] == 0) { det = 0; break; }
                if (piv != col) { for (var k = 0; k < n; k++) (m[col * n + k], m[piv * n + k]) = (m[piv * n + k], m[col * n + k]); det = -det; }
                det *= m[col * n + col];
                for (var row = col + 1; row < n; row++)
                {
                    var f = m[row * n + col] / m[col * n + col];
                    for (var k = col; k < n; k++) m[row * n + k] -= f * m[col * n + k];
                }
            }
            r[b] = det;
        }
        return Movement.FromDoubles(x.Type, x.Shape[..^2], r);
    }

    /// <summary>Unique elements (or slices along <paramref name="axis"/>): values, first indices, inverse indices, counts.</summary>
    public static (Tensor Y, Tensor Indices, Tensor Inverse, Tensor Counts) Unique(Tensor x, int? axis, bool sorted)
    {
        var t = axis is null ? x.Reshape([(int)x.Length]) : x;
        var ax = axis ?? 0;
        var dim = t.Shape[ax];
        var slices = Enumerable.Range(0, dim).Select(i => SliceKey(t, ax, i)).ToList();
        var firsts = new List<int>();
        var keyToUnique = new Dictionary<string, int>();
        var inverse = new long[dim];
        var counts = new List<long>();
        for (var i = 0; i < dim; i++)
        {
            if (!keyToUnique.TryGetValue(slices[i].Key, out var u))
            {
                u = firsts.Count;
                keyToUnique[slices[i].Key] = u;
                firsts.Add(i);
                counts.Add(0);
            }
            inverse[i] = u;
            counts[u]++;
        }
        var order = Enumerable.Range(0, firsts.Count).ToArray();
        if (sorted) Array.Sort(order, (a, b) => CompareSlices(slices[firsts[a]].Values, slices[firsts[b]].Values));
        var rank = new int[order.Length];
        for (var i = 0; i < order.Length; i++) rank[order[i]] = i;
        var y = Movement.Gather(t, Tensor.Vector(order.Select(o => (long)firsts[o]).ToArray()), ax);
        return (y, Tensor.Vector(order.Select(o => (long)firsts[o]).ToArray()), Tensor.Vector(inverse.Select(u => (long)rank[u]).ToArray()),
            Tensor.Vector(order.Select(o => counts[o]).ToArray()));
    }

    private static (string Key, double[] Values) SliceKey(Tensor t, int axis, int i)
    {
        var s = Movement.Gather(t, Tensor.Vector(i), axis);
        if (t.Type == DType.String) return (string.Join("\u0001", s.Strings), []);
        var v = s.ToDoubles();
        return (string.Join(",", v.Select(d => d.ToString("R", CultureInfo.InvariantCulture))), v);
    }

    private static int CompareSlices(double[] a, double[] b)
    {
        for (var i = 0; i < Math.Min(a.Length, b.Length); i++)
        {
            var c = a[i].CompareTo(b[i]);
            if (c != 0) return c;
        }
        return a.Length.CompareTo(b.Length);
    }

    public static Tensor StringNormalizer(Tensor x, string caseAction, bool caseSensitive, string[] stopwords)
    {
        var stop = new HashSet<string>(stopwords, caseSensitive ? StringComparer.Ordinal : StringComparer.OrdinalIgnoreCase);
        var kept = x.Strings.Where(s => !stop.Contains(s)).Select(s => caseAction switch
        {
            "LOWER" => s.ToLowerInvariant(),
            "UPPER" => s.ToUpperInvariant(),
            _ => s,
        }).ToArray();
        if (kept.Length == 0) kept = [""];
        int[] shape = x.Rank == 2 ? [1, kept.Length] : [kept.Length];
        return Tensor.FromStrings(shape, kept);
    }

    public static Tensor NonMaxSuppression(Tensor boxes, Tensor scores, long maxPerClass, double iouThreshold, double? scoreThreshold, bool centerPoint)
    {
        int batches = boxes.Shape[0], nBoxes = boxes.Shape[1], classes = scores.Shape[1];
        var b = boxes.ToDoubles();
        var s = scores.ToDoubles();
        var selected = new List<long>();
        (double y1, double x1, double y2, double x2) Box(int bi, int i)
        {
            var o = ((long)bi * nBoxes + i) * 4;
            if (centerPoint)
            {
                double xc = b[o], yc = b[o + 1], w = b[o + 2], h = b[o + 3];
                return (yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2);
            }
            return (Math.Min(b[o], b[o + 2]), Math.Min(b[o + 1], b[o + 3]), Math.Max(b[o], b[o + 2]), Math.Max(b[o + 1], b[o + 3]));
        }
        for (var bi = 0; bi < batches; bi++)
            for (var c = 0; c < classes; c++)
            {
                var cand = Enumerable.Range(0, nBoxes).Select(i => (i, score: s[((long)bi * classes + c) * nBoxes + i]))
                    .Where(p => scoreThreshold is null || p.score > scoreThreshold).OrderByDescending(p => p.score).ThenBy(p => p.i).ToList();
                var keep = new List<int>();
                foreach (var (i, _) in cand)
                {
                    if (keep.Count >= maxPerClass) break;
                    var a = Box(bi, i);
                    var ok = true;
                    foreach (var k in keep)
                    {
                        var q = Box(bi, k);
                        var iw = Math.Max(0, Math.Min(a.x2, q.x2) - Math.Max(a.x1, q.x1));
                        var ih = Math.Max(0, Math.Min(a.y2, q.y2) - Math.Max(a.y1, q.y1));
                        var inter = iw * ih;
                        var union = (a.x2 - a.x1) * (a.y2 - a.y1) + (q.x2 - q.x1) * (q.y2 - q.y1) - inter;
                        if (union > 0 && inter / union > iouThreshold) { ok = false; break; }
                    }
                    if (ok) keep.Add(i);
                }
                foreach (var k in keep) selected.AddRange([bi, c, k]);
            }
        return Tensor.FromArray(DType.I64, [selected.Count / 3, 3], selected.ToArray());
    }

    public static Tensor MaxUnpool(Tensor x, Tensor indices, int[] outShape)
    {
        var r = new double[Tensor.Count(outShape)];
        var ind = indices.ToLongs();
        for (long i = 0; i < x.Length; i++)
        {
            if (ind[i] < 0 || ind[i] >= r.Length) throw new KernelException($"MaxUnpool index {ind[i]} is out of range for {r.Length} outputs");
            r[ind[i]] = x.GetDouble(i);
        }
        return Movement.FromDoubles(x.Type, outShape, r);
    }
}
