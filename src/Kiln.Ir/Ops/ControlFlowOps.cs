using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>If, Loop and Scan: ops whose bodies are subgraphs.</summary>
internal static class ControlFlowOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("If", "cond", "outputs*", "else_branch:graph!, then_branch:graph!", IfRule);
        r.Add("Loop", "M?, cond?, v_initial*?", "v_final_and_scan_outputs*", "body:graph!", LoopRule);
        r.Add("Scan", "initial_state_and_scan_inputs*", "final_state_and_scan_outputs*",
            "body:graph!, num_scan_inputs:int!, scan_input_axes:ints?, scan_input_directions:ints?, scan_output_axes:ints?, scan_output_directions:ints?",
            ScanRule, c => { if (c.Opset < 9) throw c.Fail("Scan-8 (with sequence_lens and a batch dim) is not supported"); }, since: 8);
    }

    private static void IfRule(InferenceContext c)
    {
        var then = c.InferSubgraph(c.GraphAttr("then_branch"), []);
        var els = c.InferSubgraph(c.GraphAttr("else_branch"), []);
        if (then.Count != els.Count) throw c.Fail($"then_branch has {then.Count} outputs, else_branch {els.Count}");
        if (then.Count != c.OutputCount) throw c.Fail($"branches have {then.Count} outputs, the node {c.OutputCount}");
        for (var i = 0; i < then.Count; i++) c.Set(i, Merge(then[i], els[i]));
    }

    /// <summary>The type both of two types fit: equal dims stay, differing ones become unknown.</summary>
    internal static IrType Merge(IrType a, IrType b)
    {
        switch (a, b)
        {
            case (TensorType x, TensorType y) when x.Elem == y.Elem:
                if (x.Shape is null || y.Shape is null || x.Shape.Rank != y.Shape.Rank) return x with { Shape = null };
                return x with { Shape = new Shape(x.Shape.Dims.Zip(y.Shape.Dims, (p, q) => p.Equals(q) ? p : Dim.Unknown)) };
            case (SequenceType x, SequenceType y): return new SequenceType(Merge(x.Element, y.Element));
            case (OptionalType x, OptionalType y): return new OptionalType(Merge(x.Element, y.Element));
            default: return a == b ? a : a is UnknownType ? b : a;
        }
    }

    private static void LoopRule(InferenceContext c)
    {
        var body = c.GraphAttr("body");
        var carried = c.InputCount - 2;
        var inputs = new List<IrType?> { new TensorType(DType.I64, Shape.Scalar), new TensorType(DType.Bool, Shape.Scalar) };
        for (var i = 0; i < carried; i++) inputs.Add(c.InputType(i + 2));
        var outs = c.InferSubgraph(body, inputs);
        // A carried value may change shape between iterations: where the body's result differs from its input, relax and infer again.
        var relaxed = false;
        for (var i = 0; i < carried && i + 1 < outs.Count; i++)
        {
            var merged = Merge(inputs[i + 2]!, outs[i + 1]);
            if (merged != inputs[i + 2]) { inputs[i + 2] = merged; relaxed = true; }
        }
        if (relaxed)
        {
            for (var i = 0; i < body.Inputs.Count; i++) body.Inputs[i].Type = inputs.ElementAtOrDefault(i) ?? body.Inputs[i].Type;
            outs = c.InferSubgraph(body, inputs);
        }
        for (var i = 0; i < carried; i++) c.Set(i, Merge(inputs[i + 2]!, outs[i + 1]));
        Dim trips = c.Known(0)?.Values[0] ?? Dim.Unknown;
        for (var k = carried + 1; k < outs.Count; k++)
        {
            var t = outs[k];
            c.Set(k - 1, t is TensorType { Shape: { } s } tt ? tt with { Shape = new Shape([trips.IsConstant && !c.HasInput(1) ? trips : Dim.Unknown, .. s.Dims]) } : t is TensorType tt2 ? tt2 : t);
        }
    }

    private static void ScanRule(InferenceContext c)
    {
        var body = c.GraphAttr("body");
        var nScan = (int)c.Int("num_scan_inputs");
        var nState = c.InputCount - nScan;
        var inAxes = c.Ints("scan_input_axes") ?? new long[nScan];
        var outAxes = c.Ints("scan_output_axes");
        var inputs = new List<IrType?>();
        Dim steps = Dim.Unknown;
        for (var i = 0; i < c.InputCount; i++)
        {
            var t = c.InputType(i);
            if (i >= nState && t is TensorType { Shape: { } s } tt)
            {
                var axis = c.Axis(inAxes[i - nState], s.Rank);
                steps = s[axis];
                t = tt with { Shape = new Shape(s.Dims.Where((_, k) => k != axis)) };
            }
            inputs.Add(t);
        }
        var outs = c.InferSubgraph(body, inputs);
        for (var i = 0; i < outs.Count; i++)
        {
            if (i < nState) { c.Set(i, outs[i]); continue; }
            if (outs[i] is not TensorType { Shape: { } s } tt) { c.Set(i, outs[i]); continue; }
            var dims = s.Dims.ToList();
            var axis = outAxes is null ? 0 : (int)(outAxes[i - nState] < 0 ? outAxes[i - nState] + s.Rank + 1 : outAxes[i - nState]);
            dims.Insert(axis, steps);
            c.Set(i, tt with { Shape = new Shape(dims) });
        }
    }
}
