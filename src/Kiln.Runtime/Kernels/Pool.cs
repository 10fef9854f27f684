namespace Kiln.Runtime.Kernels;

public enum PoolKind { Max, Average, Lp }

/// <summary>Max / average / Lp pooling over N spatial dims (computed in double, written in the input's type).</summary>
public static class Pool
{
    public static (Tensor Y, Tensor? Indices) Run(Tensor x, Window win, PoolKind kind, bool countIncludePad, int p, bool wantIndices, int storageOrder)
    {
        var n = x.Shape[0];
        var c = x.Shape[1];
        var spatial = x.Shape[2..];
        var rank = spatial.Length;
        var outSpatial = win.OutputShape(spatial);
        var pin = (int)Tensor.Count(spatial);
        var pout = (int)Tensor.Count(outSpatial);
        var kSize = (int)Tensor.Count(win.Kernel);
        var res = new double[(long)n * c * pout];
        var idxOut = wantIndices ? new long[res.Length] : null;
        var inStrides = Tensor.Strides(spatial);
        var oIdx = new int[rank];
        var kIdx = new int[rank];
        var pos = new int[rank];
        var vals = x.ToDoubles();
        for (var o = 0; o < pout; o++)
        {
            Convolution.Unflatten(o, outSpatial, oIdx);
            // Offsets of the window's elements inside the input, and how many fall in the padded area.
            var offsets = new List<long>(kSize);
            var positions = new List<int[]>(kSize);
            var padded = 0;
            for (var k = 0; k < kSize; k++)
            {
                Convolution.Unflatten(k, win.Kernel, kIdx);
                var inside = true;
                long at = 0;
                for (var i = 0; i < rank; i++)
                {
                    pos[i] = oIdx[i] * win.Strides[i] - win.PadsBegin[i] + kIdx[i] * win.Dilations[i];
                    if (pos[i] < 0 || pos[i] >= spatial[i]) inside = false;
                    else at += pos[i] * inStrides[i];
                }
                if (inside) { offsets.Add(at); positions.Add((int[])pos.Clone()); }
                else
                {
                    // count_include_pad counts pad positions, not positions past the end added by ceil_mode.
                    var inPad = true;
                    for (var i = 0; i < rank; i++)
                        if (pos[i] >= spatial[i] + win.PadsEnd[i]) inPad = false;
                    if (inPad) padded++;
                }
            }
            for (var b = 0; b < n * c; b++)
            {
                var baseAt = (long)b * pin;
                double acc = kind == PoolKind.Max ? double.NegativeInfinity : 0;
                long best = -1;
                for (var j = 0; j < offsets.Count; j++)
                {
                    var v = vals[baseAt + offsets[j]];
                    switch (kind)
                    {
                        case PoolKind.Max:
                            if (v > acc || best < 0 || double.IsNaN(v)) { acc = v; best = j; }
                            break;
                        case PoolKind.Average: acc += v; break;
                        default: acc += Math.Pow(Math.Abs(v), p); break;
                    }
                }
                double result = kind switch
                {
                    PoolKind.Max => acc,
                    PoolKind.Average => acc / (countIncludePad ? offsets.Count + padded : Math.Max(1, offsets.Count)),
                    _ => Math.Pow(acc, 1.0 / p),
                };
                res[(long)b * pout + o] = result;
                if (idxOut is not null && best >= 0)
                {
                    long flat;
                    if (storageOrder == 0) flat = offsets[(int)best];
                    else
                    {
                        // Column-major over the spatial dims.
                        flat = 0;
                        long mul = 1;
                        for (var i = 0; i < rank; i++) { flat += positions[(int)best][i] * mul; mul *= spatial[i]; }
                    }
                    idxOut[(long)b * pout + o] = baseAt + flat;
                }
            }
        }
        int[] shape = [n, c, .. outSpatial];
        return (Movement.FromDoubles(x.Type, shape, res), idxOut is null ? null : Tensor.FromArray(DType.I64, shape, idxOut));
    }

    public static Tensor Global(Tensor x, PoolKind kind, int p)
    {
        var axes = Enumerable.Range(2, x.Rank - 2).ToArray();
        return kind switch
        {
            PoolKind.Max => Reduce.Run(x, axes, true, ReduceKind.Max),
            PoolKind.Average => Reduce.Run(x, axes, true, ReduceKind.Mean),
            _ => p == 2 ? Reduce.Run(x, axes, true, ReduceKind.L2) : LpGlobal(x, axes, p),
        };
    }

    private static Tensor LpGlobal(Tensor x, int[] axes, int p)
    {
        var abs = Movement.FromDoubles(x.Type, x.Shape, x.ToDoubles().Select(v => Math.Pow(Math.Abs(v), p)).ToArray());
        var s = Reduce.Run(abs, axes, true, ReduceKind.Sum);
        return Movement.FromDoubles(x.Type, s.Shape, s.ToDoubles().Select(v => Math.Pow(v, 1.0 / p)).ToArray());
    }
}
