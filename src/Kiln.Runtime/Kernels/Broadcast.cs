namespace Kiln.Runtime.Kernels;

/// <summary>
/// NumPy-style broadcasting: the output shape of several inputs, and an iteration plan that walks the output in
/// row-major order handing out inner runs (contiguous in the output, stride 0 or 1 in each input) so the inner
/// loop can be vectorized. Adjacent dims that stay contiguous in every input are merged first.
/// </summary>
public static class Broadcast
{
    public static int[] Shape(params int[][] shapes)
    {
        var rank = shapes.Max(s => s.Length);
        var r = new int[rank];
        for (var i = 0; i < rank; i++)
        {
            var d = 1;
            foreach (var s in shapes)
            {
                var k = i - (rank - s.Length);
                if (k < 0) continue;
                var e = s[k];
                if (e == d || e == 1) continue;
                if (d == 1) { d = e; continue; }
                throw new KernelException($"shapes {string.Join(" and ", shapes.Select(x => "[" + string.Join(", ", x) + "]"))} do not broadcast (dim {i}: {d} vs {e})");
            }
            r[i] = shapes.Any(s => i - (rank - s.Length) >= 0 && s[i - (rank - s.Length)] == 0) ? 0 : d;
        }
        return r;
    }

    /// <summary>Element strides of <paramref name="shape"/> viewed as <paramref name="outShape"/> (0 on broadcast dims).</summary>
    public static long[] StridesFor(int[] shape, int[] outShape)
    {
        var rank = outShape.Length;
        var s = new long[rank];
        long acc = 1;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            var o = i + rank - shape.Length;
            s[o] = shape[i] == 1 && outShape[o] != 1 ? 0 : acc;
            acc *= shape[i];
        }
        return s;
    }

    /// <summary>
    /// Calls <paramref name="run"/>(offsets, count) for each inner run: offsets[k] is where input k starts, and
    /// input k advances by innerStrides[k] (0 or its own stride) per output element.
    /// </summary>
    public static void ForEachRun(int[] outShape, long[][] strides, RunAction run)
    {
        var n = strides.Length;
        var (dims, st) = Plan(outShape, strides);
        if (outShape.Any(d => d == 0)) return;
        var offsets = new long[n];
        if (dims.Length == 0)
        {
            run(offsets, new long[n], 1);
            return;
        }
        var rank = dims.Length;
        var inner = dims[^1];
        var innerStrides = st[^1];
        var idx = new int[rank - 1];
        while (true)
        {
            run(offsets, innerStrides, inner);
            var j = rank - 2;
            for (; j >= 0; j--)
            {
                idx[j]++;
                for (var k = 0; k < n; k++) offsets[k] += st[j][k];
                if (idx[j] < dims[j]) break;
                for (var k = 0; k < n; k++) offsets[k] -= st[j][k] * dims[j];
                idx[j] = 0;
            }
            if (j < 0) return;
        }
    }

    /// <summary>The merged iteration space: dims, and per dim the stride of each input.</summary>
    public static (int[] Dims, long[][] Strides) Plan(int[] outShape, long[][] strides)
    {
        var n = strides.Length;
        // Merge dims: dims i and i+1 merge when every input's stride[i] == stride[i+1] * shape[i+1].
        var dims = new List<int>();
        var st = new List<long[]>();
        for (var i = 0; i < outShape.Length; i++)
        {
            if (outShape[i] == 1) continue;
            var cur = new long[n];
            for (var k = 0; k < n; k++) cur[k] = strides[k][i];
            if (dims.Count > 0)
            {
                var last = st[^1];
                var d = outShape[i];
                var merge = true;
                for (var k = 0; k < n; k++)
                    if (last[k] != cur[k] * d) { merge = false; break; }
                if (merge)
                {
                    dims[^1] *= d;
                    st[^1] = cur;
                    continue;
                }
            }
            dims.Add(outShape[i]);
            st.Add(cur);
        }
        return (dims.ToArray(), st.ToArray());
    }

    public delegate void RunAction(long[] offsets, long[] innerStrides, int count);
}
