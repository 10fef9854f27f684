using Kiln.Ir.Ops;

namespace Kiln.Ir.Inference;

/// <summary>Shape-rule building blocks shared by the op files.</summary>
public static class Rules
{
    /// <summary>Output 0 has input 0's type.</summary>
    public static void SameAsInput(InferenceContext c)
    {
        c.Set(0, c.InputType(0));
        if (c.Known(0) is { } k) c.SetKnown(0, k);
    }

    /// <summary>Output 0 has input 0's shape and the given element type.</summary>
    public static ShapeRule SameShapeAs(DType elem) => c => c.Set(0, elem, c.ShapeOf(0));

    /// <summary>Numpy-style broadcasting of two shapes; null when either rank is unknown.</summary>
    public static Shape? Broadcast(InferenceContext c, Shape? a, Shape? b)
    {
        if (a is null || b is null) return null;
        var rank = Math.Max(a.Rank, b.Rank);
        var dims = new Dim[rank];
        for (var i = 0; i < rank; i++)
        {
            var x = i - (rank - a.Rank) >= 0 ? a[i - (rank - a.Rank)] : Dim.One;
            var y = i - (rank - b.Rank) >= 0 ? b[i - (rank - b.Rank)] : Dim.One;
            dims[i] = BroadcastDim(c, x, y, a, b);
        }
        return new Shape(dims);
    }

    private static Dim BroadcastDim(InferenceContext c, Dim x, Dim y, Shape a, Shape b)
    {
        if (x.Value == 1) return y;
        if (y.Value == 1) return x;
        if (x.Equals(y)) return x;
        if (x.IsConstant && y.IsConstant) throw c.Fail($"shapes {a} and {b} cannot be broadcast");
        // A symbol is assumed not to be 1, so the other side must match it.
        if (x.IsUnknown) return y;
        if (y.IsUnknown) return x;
        if (x.IsConstant) return x;
        if (y.IsConstant) return y;
        // Two different expressions (an upsampled 2·⌊(h + 1) / 2⌋ added to h): neither is 1, so they are equal at run
        // time or the input is bad, which the kernels check; the first names the dim.
        return x;
    }

    public static Shape? BroadcastAll(InferenceContext c, IEnumerable<Shape?> shapes)
    {
        Shape? result = Shape.Scalar;
        foreach (var s in shapes) result = Broadcast(c, result, s);
        return result;
    }

    /// <summary>Elementwise over broadcast inputs; output element type from <paramref name="elem"/> (null: input 0's).</summary>
    public static ShapeRule Elementwise(DType? elem = null, Func<Dim[], Dim?>? known = null) => c =>
    {
        var inputs = Enumerable.Range(0, c.InputCount).Where(c.HasInput).ToList();
        var outElem = elem ?? c.Elem(inputs[0]);
        CheckSameElem(c, inputs);
        var shape = BroadcastAll(c, inputs.Select(c.ShapeOf));
        c.Set(0, outElem, shape);
        if (known is not null && KnownElementwise(c, inputs, known) is { } values)
            c.SetKnown(0, values with { Elem = outElem });
    };

    private static void CheckSameElem(InferenceContext c, List<int> inputs)
    {
        var first = c.Elem(inputs[0]);
        foreach (var i in inputs.Skip(1))
            if (c.Elem(i) != first) throw c.Fail($"input {i} is {c.Elem(i).Name()} but input {inputs[0]} is {first.Name()}");
    }

    /// <summary>Applies <paramref name="f"/> to small known inputs with broadcasting; null if any input or result is unknown.</summary>
    public static SymbolicTensor? KnownElementwise(InferenceContext c, IReadOnlyList<int> inputs, Func<Dim[], Dim?> f)
    {
        var vals = inputs.Select(c.Known).ToList();
        if (vals.Any(v => v is null)) return null;
        var shapes = vals.Select(v => v!.Shape).ToList();
        var rank = shapes.Max(s => s.Length);
        var outShape = new long[rank];
        for (var d = 0; d < rank; d++)
        {
            long size = 1;
            foreach (var s in shapes)
            {
                var k = d - (rank - s.Length);
                var n = k >= 0 ? s[k] : 1;
                if (n != 1) { if (size != 1 && size != n) return null; size = n; }
            }
            outShape[d] = size;
        }
        var count = outShape.Aggregate(1L, (a, b) => a * b);
        if (count > SymbolicTensor.MaxElements) return null;
        var result = new Dim[count];
        var args = new Dim[vals.Count];
        for (long flat = 0; flat < count; flat++)
        {
            for (var j = 0; j < vals.Count; j++)
                args[j] = vals[j]!.Values[BroadcastIndex(flat, outShape, shapes[j])];
            if (f(args) is not { } r) return null;
            result[flat] = r;
        }
        return new SymbolicTensor(vals[0]!.Elem, outShape, result);
    }

    private static long BroadcastIndex(long flat, long[] outShape, long[] inShape)
    {
        long index = 0, stride = 1;
        for (var d = outShape.Length - 1; d >= 0; d--)
        {
            var coord = flat % outShape[d];
            flat /= outShape[d];
            var k = d - (outShape.Length - inShape.Length);
            if (k < 0) continue;
            if (inShape[k] != 1) index += coord * stride;
            stride *= inShape[k];
        }
        return index;
    }

    /// <summary>Comparison of dims when it can be decided: constants, equal expressions, or a non-negative dim against a negative number.</summary>
    public static bool? Compare(Dim a, Dim b, Func<long, long, bool> op, bool isEquality)
    {
        if (a.Value is { } x && b.Value is { } y) return op(x, y);
        if (a.IsUnknown || b.IsUnknown) return null;
        if (isEquality)
        {
            if (a.Equals(b)) return true;
            if ((a.IsKnownNonNegative && b.Value < 0) || (b.IsKnownNonNegative && a.Value < 0)) return false;
        }
        return null;
    }

    public static Dim Bool(bool b) => b ? Dim.One : Dim.Zero;

    /// <summary>Resolves a reshape target (0 = copy, -1 = infer) against the input shape.</summary>
    public static Shape ReshapeTarget(InferenceContext c, Shape? input, SymbolicTensor target, bool allowZero)
    {
        var dims = target.Values.ToArray();
        var inferAt = -1;
        for (var i = 0; i < dims.Length; i++)
        {
            if (dims[i].Value == 0 && !allowZero)
            {
                dims[i] = input is not null && i < input.Rank ? input[i] : Dim.Unknown;
            }
            else if (dims[i].Value == -1)
            {
                if (inferAt >= 0) throw c.Fail("reshape target has more than one -1");
                inferAt = i;
            }
            else if (dims[i].Value < -1) throw c.Fail($"reshape target has invalid dim {dims[i]}");
        }
        if (inferAt >= 0)
        {
            var known = Dim.One;
            for (var i = 0; i < dims.Length; i++) if (i != inferAt) known *= dims[i];
            dims[inferAt] = input is null ? Dim.Unknown : (Dim.ExactDivide(input.ElementCount(), known) ?? Dim.Unknown);
            if (input is not null && input.ElementCount().Value is { } total && known.Value is { } k && k != 0 && total % k != 0)
                throw c.Fail($"cannot reshape {input} ({total} elements) to {FormatTarget(target)}");
        }
        else if (input is not null && input.ElementCount().Value is { } total2 && new Shape(dims).ElementCount().Value is { } t2 && total2 != t2)
        {
            throw c.Fail($"cannot reshape {input} ({total2} elements) to {FormatTarget(target)} ({t2} elements)");
        }
        return new Shape(dims);
    }

    private static string FormatTarget(SymbolicTensor t) => "[" + string.Join(", ", t.Values.Select(v => v.ToString())) + "]";

    /// <summary>Dims from a known 1-D shape tensor; non-negative dims only.</summary>
    public static Shape? ShapeFromKnown(InferenceContext c, int input)
    {
        if (c.Known(input) is not { } k) return null;
        foreach (var v in k.Values)
            if (v.Value < 0) throw c.Fail($"shape input has negative dim {v}");
        return new Shape(k.Values);
    }

    /// <summary>Output shape of a 1-D tensor of unknown length whose shape input has a known length.</summary>
    public static Shape? ShapeOfLength(InferenceContext c, int input)
    {
        var s = c.ShapeOf(input);
        if (s is null || s.Rank != 1) return null;
        return s[0].Value is { } n ? new Shape(Enumerable.Repeat(Dim.Unknown, (int)n)) : null;
    }
}
