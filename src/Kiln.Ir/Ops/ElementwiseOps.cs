using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Elementwise math, comparisons, logic, Cast, Clip, Where and the variadic Sum/Mean/Max/Min.</summary>
internal static class ElementwiseOps
{
    private static readonly string[] Unary =
    [
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Erf", "Exp", "Floor", "Log",
        "Neg", "Reciprocal", "Round", "Sign", "Sin", "Sinh", "Sqrt", "Tan", "Tanh", "BitwiseNot",
    ];

    public static void Register(OpRegistry r)
    {
        foreach (var op in Unary)
            r.Add(op, "X", "Y", "", op == "Neg" ? NegRule : Rules.SameAsInput, DropLegacy).With(OpTraits.Elementwise);
        r.Add("Not", "X", "Y", "", c => { Rules.SameAsInput(c); if (c.Known(0) is { } k) c.SetKnown(0, k with { Values = k.Values.Select(v => v.Value is { } b ? Rules.Bool(b == 0) : Dim.Unknown).ToArray() }); });
        r.Add("IsNaN", "X", "Y", "", Rules.SameShapeAs(DType.Bool));
        r.Add("IsInf", "X", "Y", "detect_negative:int=1, detect_positive:int=1", Rules.SameShapeAs(DType.Bool));

        r.Add("Add", "A, B", "C", "", Rules.Elementwise(known: a => a[0] + a[1]), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Sub", "A, B", "C", "", Rules.Elementwise(known: a => a[0] - a[1]), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Mul", "A, B", "C", "", Rules.Elementwise(known: a => a[0] * a[1]), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Div", "A, B", "C", "", Rules.Elementwise(known: a => a[1].Value == 0 ? null : Dim.FloorDivide(a[0], a[1]) is { IsUnknown: false } d ? d : null), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Pow", "X, Y", "Z", "", c => { c.Set(0, c.Elem(0), Rules.Broadcast(c, c.ShapeOf(0), c.ShapeOf(1))); }, LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Mod", "A, B", "C", "fmod:int=0", Rules.Elementwise(known: a => a[0].Value is { } x && a[1].Value is { } y && y != 0 ? Dim.Const(x % y) : null)).With(OpTraits.Elementwise);
        r.Add("BitShift", "X, Y", "Z", "direction:string!", Rules.Elementwise());
        foreach (var op in new[] { "BitwiseAnd", "BitwiseOr", "BitwiseXor" }) r.Add(op, "A, B", "C", "", Rules.Elementwise(), since: 18);
        r.Add("PRelu", "X, slope", "Y", "", c => c.Set(0, c.Elem(0), Rules.Broadcast(c, c.ShapeOf(0), c.ShapeOf(1))), PReluAdapter).With(OpTraits.Elementwise);

        r.Add("And", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => a[0].Value is { } x && a[1].Value is { } y ? Rules.Bool(x != 0 && y != 0) : null), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Or", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => a[0].Value is { } x && a[1].Value is { } y ? Rules.Bool(x != 0 || y != 0) : null), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Xor", "A, B", "C", "", Rules.Elementwise(DType.Bool), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Equal", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => Rules.Compare(a[0], a[1], (x, y) => x == y, true) is { } b ? Rules.Bool(b) : null), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Greater", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => Rules.Compare(a[0], a[1], (x, y) => x > y, false) is { } b ? Rules.Bool(b) : null), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("Less", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => Rules.Compare(a[0], a[1], (x, y) => x < y, false) is { } b ? Rules.Bool(b) : null), LegacyBroadcast).With(OpTraits.Elementwise);
        r.Add("GreaterOrEqual", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => Rules.Compare(a[0], a[1], (x, y) => x >= y, false) is { } b ? Rules.Bool(b) : null), since: 12).With(OpTraits.Elementwise);
        r.Add("LessOrEqual", "A, B", "C", "", Rules.Elementwise(DType.Bool, a => Rules.Compare(a[0], a[1], (x, y) => x <= y, false) is { } b ? Rules.Bool(b) : null), since: 12).With(OpTraits.Elementwise);

        r.Add("Sum", "data_0*", "sum", "", Rules.Elementwise(), DropLegacy).With(OpTraits.Elementwise);
        r.Add("Mean", "data_0*", "mean", "", Rules.Elementwise(), DropLegacy).With(OpTraits.Elementwise);
        r.Add("Max", "data_0*", "max", "", Rules.Elementwise(known: a => a.All(d => d.IsConstant) ? Dim.Const(a.Max(d => d.Value!.Value)) : null), DropLegacy).With(OpTraits.Elementwise);
        r.Add("Min", "data_0*", "min", "", Rules.Elementwise(known: a => a.All(d => d.IsConstant) ? Dim.Const(a.Min(d => d.Value!.Value)) : null), DropLegacy).With(OpTraits.Elementwise);

        r.Add("Where", "condition, X, Y", "output", "", WhereRule, since: 9);
        r.Add("Clip", "input, min?, max?", "output", "", c => c.Set(0, c.Elem(0), c.ShapeOf(0)), ClipAdapter);
        r.Add("Cast", "input", "output", "to:int!, saturate:int=1", CastRule, CastAdapter);
        r.Add("CastLike", "input, target_type", "output", "saturate:int=1", c => c.Set(0, c.Elem(1), c.ShapeOf(0)), since: 15);
    }

    /// <summary>Opset 1–5 ops carry <c>consumed_inputs</c>, a hint with no meaning for inference.</summary>
    internal static void DropLegacy(AdapterContext c) => c.Attributes.Remove("consumed_inputs");

    private static void NegRule(InferenceContext c)
    {
        c.Set(0, c.InputType(0));
        if (c.Known(0) is { } k) c.SetKnown(0, k with { Values = k.Values.Select(v => -v).ToArray() });
    }

    /// <summary>Before opset 7, binary ops broadcast only with broadcast=1, aligning B at <c>axis</c> of A.</summary>
    private static void LegacyBroadcast(AdapterContext c)
    {
        DropLegacy(c);
        var broadcast = c.Take<IntAttr>("broadcast")?.Value ?? 0;
        var axis = c.Take<IntAttr>("axis")?.Value;
        if (c.Opset >= 7 || broadcast == 0 || axis is null) return;
        // B's dims line up with A's dims from `axis`: append trailing ones to B so numpy broadcasting does the same.
        var a = c.Input(0)?.Type as TensorType;
        var b = c.Input(1)?.Type as TensorType;
        if (a?.Shape is null || b?.Shape is null)
            throw c.Fail("legacy broadcast with 'axis' needs the ranks of both inputs to be declared");
        var ax = axis.Value < 0 ? axis.Value + a.Shape.Rank : axis.Value;
        var trailing = a.Shape.Rank - ax - b.Shape.Rank;
        if (trailing <= 0) return;
        var axes = Enumerable.Range(b.Shape.Rank, (int)trailing).Select(i => (long)i).ToArray();
        var unsq = c.Emit("Unsqueeze", [c.Input(1), c.Int64Constant(axes, "axes")]);
        c.SetInput(1, unsq[0]);
    }

    /// <summary>Before opset 7 a 1-D slope of PRelu applied per channel (axis 1); numpy broadcasting needs it shaped [C, 1, …].</summary>
    private static void PReluAdapter(AdapterContext c)
    {
        DropLegacy(c);
        if (c.Opset >= 7) return;
        var x = c.Input(0)?.Type as TensorType;
        var slope = c.Input(1)?.Type as TensorType;
        if (x?.Shape is not { Rank: > 2 } xs || slope?.Shape is not { Rank: 1 } ss || ss[0].Value == 1) return;
        var axes = Enumerable.Range(1, xs.Rank - 2).Select(i => (long)i).ToArray();
        c.SetInput(1, c.Emit("Unsqueeze", [c.Input(1), c.Int64Constant(axes, "axes")])[0]);
    }

    private static void WhereRule(InferenceContext c)
    {
        c.Set(0, c.Elem(1), Rules.BroadcastAll(c, [c.ShapeOf(0), c.ShapeOf(1), c.ShapeOf(2)]));
        var v = Rules.KnownElementwise(c, [0, 1, 2], a => a[0].Value is { } cond ? (cond != 0 ? a[1] : a[2]) : null);
        if (v is not null) c.SetKnown(0, v with { Elem = c.Elem(1) });
    }

    private static void ClipAdapter(AdapterContext c)
    {
        DropLegacy(c);
        if (c.Opset >= 11) return;
        var min = c.Take<FloatAttr>("min");
        var max = c.Take<FloatAttr>("max");
        var elem = (c.Input(0)?.Type as TensorType)?.Elem ?? DType.F32;
        Value? Scalar(float v, string hint) => elem switch
        {
            DType.F64 => c.Constant(TensorData.FromArray(DType.F64, [], new[] { (double)v }), hint),
            DType.F16 => c.Constant(TensorData.FromArray(DType.F16, [], new[] { (Half)v }), hint),
            _ => c.FloatConstant([v], hint, scalar: true),
        };
        c.SetInput(1, min is null ? null : Scalar(min.Value, "min"));
        c.SetInput(2, max is null ? null : Scalar(max.Value, "max"));
        while (c.Inputs.Count > 1 && c.Inputs[^1] is null) c.Inputs.RemoveAt(c.Inputs.Count - 1);
    }

    private static readonly Dictionary<string, long> LegacyCastNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["FLOAT"] = 1, ["UINT8"] = 2, ["INT8"] = 3, ["UINT16"] = 4, ["INT16"] = 5, ["INT32"] = 6, ["INT64"] = 7,
        ["STRING"] = 8, ["BOOL"] = 9, ["FLOAT16"] = 10, ["DOUBLE"] = 11, ["UINT32"] = 12, ["UINT64"] = 13,
    };

    /// <summary>Cast-1 names the target type with a string.</summary>
    private static void CastAdapter(AdapterContext c)
    {
        if (c.Attributes.TryGetValue("to", out var to) && to is StringAttr s)
            c.Attributes["to"] = LegacyCastNames.TryGetValue(s.Value, out var code) ? new IntAttr(code) : throw c.Fail($"Cast to unknown type '{s.Value}'");
    }

    private static void CastRule(InferenceContext c)
    {
        var to = OnnxElementCodes.FromCode((int)c.Int("to")) ?? throw c.Fail($"Cast to unsupported element type code {c.Int("to")}");
        c.Set(0, to, c.ShapeOf(0));
        if (c.Known(0) is { } k && (to.IsInteger() || to == DType.Bool) && (k.Elem.IsInteger() || k.Elem == DType.Bool))
            c.SetKnown(0, to == DType.Bool ? k with { Elem = to, Values = k.Values.Select(v => v.Value is { } x ? Rules.Bool(x != 0) : Dim.Unknown).ToArray() } : k with { Elem = to });
    }
}
