using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Sequence and optional ops.</summary>
internal static class SequenceOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("SequenceEmpty", "", "output", "dtype:int?", c =>
            c.Set(0, new SequenceType(new TensorType(OnnxElementCodes.FromCode((int)(c.OptInt("dtype") ?? 1)) ?? DType.F32, (Shape?)null))), since: 11);
        r.Add("SequenceConstruct", "inputs*", "output_sequence", "", c =>
        {
            IrType t = c.InputType(0);
            for (var i = 1; i < c.InputCount; i++) t = ControlFlowOps.Merge(t, c.InputType(i));
            c.Set(0, new SequenceType(t));
        }, since: 11);
        r.Add("SequenceInsert", "input_sequence, tensor, position?", "output_sequence", "", c =>
            c.Set(0, c.InputType(0) is SequenceType s ? new SequenceType(ControlFlowOps.Merge(s.Element, c.InputType(1))) : new SequenceType(c.InputType(1))), since: 11);
        r.Add("SequenceAt", "input_sequence, position", "tensor", "", c =>
            c.Set(0, c.InputType(0) is SequenceType s ? s.Element : IrType.Unknown), since: 11);
        r.Add("SequenceErase", "input_sequence, position?", "output_sequence", "", c => c.Set(0, c.InputType(0)), since: 11);
        r.Add("SequenceLength", "input_sequence", "length", "", c => c.Set(0, DType.I64, Shape.Scalar), since: 11);
        r.Add("SplitToSequence", "input, split?", "output_sequence", "axis:int=0, keepdims:int=1", c =>
        {
            var s = c.ShapeOf(0);
            if (s is null) { c.Set(0, new SequenceType(new TensorType(c.Elem(0), (Shape?)null))); return; }
            var axis = c.Axis(c.Int("axis"), s.Rank);
            var scalarSplit = c.HasInput(1) && c.ShapeOf(1)?.Rank == 0;
            IEnumerable<Dim> dims = !c.HasInput(1) && c.Int("keepdims") == 0
                ? s.Dims.Where((_, i) => i != axis)
                : s.Dims.Select((d, i) => i == axis ? (!c.HasInput(1) ? Dim.One : scalarSplit && c.KnownInts(1) is [var n] ? Dim.Unknown : Dim.Unknown) : d);
            c.Set(0, new SequenceType(new TensorType(c.Elem(0), new Shape(dims))));
        }, since: 11);
        r.Add("ConcatFromSequence", "input_sequence", "concat_result", "axis:int!, new_axis:int=0", c =>
        {
            if (c.InputType(0) is not SequenceType { Element: TensorType t }) { c.Set(0, IrType.Unknown); return; }
            if (t.Shape is null) { c.Set(0, t.Elem, (Shape?)null); return; }
            var newAxis = c.Int("new_axis") != 0;
            var rank = t.Shape.Rank + (newAxis ? 1 : 0);
            var axis = c.Axis(c.Int("axis"), rank);
            var dims = t.Shape.Dims.ToList();
            if (newAxis) dims.Insert(axis, Dim.Unknown); else dims[axis] = Dim.Unknown;
            c.Set(0, t.Elem, dims);
        }, since: 11);
        r.Add("SequenceMap", "input_sequence, additional_inputs*?", "out_sequence*", "body:graph!", c =>
        {
            var body = c.GraphAttr("body");
            var inputs = new List<IrType?>();
            for (var i = 0; i < c.InputCount; i++)
                inputs.Add(c.InputType(i) is SequenceType s ? s.Element : c.InputType(i));
            var outs = c.InferSubgraph(body, inputs);
            for (var i = 0; i < outs.Count; i++) c.Set(i, new SequenceType(outs[i]));
        }, since: 17);
        r.Add("Optional", "input?", "output", "type:type?", c =>
        {
            if (c.HasInput(0)) c.Set(0, new OptionalType(c.InputType(0)));
            else if (c.Attr("type") is TypeAttr t) c.Set(0, new OptionalType(t.Value));
            else throw c.Fail("Optional with no input needs the 'type' attribute");
        }, since: 15);
        r.Add("OptionalHasElement", "input?", "output", "", c => c.Set(0, DType.Bool, Shape.Scalar), since: 15);
        r.Add("OptionalGetElement", "input", "output", "", c =>
            c.Set(0, c.InputType(0) is OptionalType o ? o.Element : c.InputType(0)), since: 15);
    }
}
