using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Sequence family: sequences and optionals. The ops are declared in Kiln.Ir/Ops/SequenceOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterSequence(Dictionary<string, Action<OpContext>> d)
    {
        d["SequenceEmpty"] = c => c.Set(0, new TensorSequence([], c.ElemAttr("dtype", DType.F32)));
        d["SequenceConstruct"] = c => c.Set(0, new TensorSequence(Enumerable.Range(0, c.InputCount).Select(c.In).ToList(), c.In(0).Type));
        d["SequenceLength"] = c => c.Set(0, Tensor.Scalar((long)Seq(c, 0).Items.Count));
        d["SequenceAt"] = c =>
        {
            var s = Seq(c, 0);
            c.Set(0, s.Items[SeqPos(c.In(1).GetLong(0), s.Items.Count, false)]);
        };
        d["SequenceInsert"] = c =>
        {
            var s = Seq(c, 0);
            var items = s.Items.ToList();
            var pos = c.Opt(2) is { } p ? SeqPos(p.GetLong(0), items.Count, true) : items.Count;
            items.Insert(pos, c.In(1));
            c.Set(0, new TensorSequence(items, s.ElementType ?? c.In(1).Type));
        };
        d["SequenceErase"] = c =>
        {
            var s = Seq(c, 0);
            var items = s.Items.ToList();
            var pos = c.Opt(1) is { } p ? SeqPos(p.GetLong(0), items.Count, false) : items.Count - 1;
            if (pos < 0) throw new KernelException("SequenceErase on an empty sequence");
            items.RemoveAt(pos);
            c.Set(0, new TensorSequence(items, s.ElementType));
        };
        d["SplitToSequence"] = c =>
        {
            var x = c.In(0);
            var axis = Movement.NormalizeAxis(c.Int("axis"), x.Rank, "SplitToSequence");
            var items = new List<Tensor>();
            if (c.Opt(1) is not { } split)
            {
                var keep = c.Int("keepdims") != 0;
                for (var i = 0; i < x.Shape[axis]; i++)
                {
                    var s = SliceAxis(x, axis, i, i + 1);
                    items.Add(keep ? s : s.Reshape(s.Shape.Where((_, a) => a != axis).ToArray()));
                }
            }
            else
            {
                var sizes = split.Rank == 0
                    ? Enumerable.Range(0, (x.Shape[axis] + (int)split.GetLong(0) - 1) / (int)split.GetLong(0)).Select(i => (int)Math.Min(split.GetLong(0), x.Shape[axis] - i * split.GetLong(0))).ToArray()
                    : SplitSizes(x.Shape[axis], split.ToLongs(), 0, null);
                var start = 0;
                foreach (var size in sizes)
                {
                    items.Add(SliceAxis(x, axis, start, start + size));
                    start += size;
                }
            }
            c.Set(0, new TensorSequence(items, x.Type));
        };
        d["ConcatFromSequence"] = c =>
        {
            var s = Seq(c, 0);
            var axis = c.Int("axis");
            if (c.Int("new_axis") != 0)
            {
                var rank = s.Items[0].Rank + 1;
                var a = Movement.NormalizeAxis(axis, rank, "ConcatFromSequence");
                c.Set(0, Movement.Concat(s.Items.Select(t => { var sh = t.Shape.ToList(); sh.Insert(a, 1); return t.Reshape(sh.ToArray()); }).ToList(), a));
            }
            else c.Set(0, Movement.Concat(s.Items, (int)axis));
        };
        d["SequenceMap"] = c =>
        {
            var body = c.Graph("body");
            var s = Seq(c, 0);
            var outs = Enumerable.Range(0, c.OutputCount).Select(_ => new List<Tensor>()).ToArray();
            for (var i = 0; i < s.Items.Count; i++)
            {
                var inputs = new List<object?> { s.Items[i] };
                for (var k = 1; k < c.InputCount; k++)
                    inputs.Add(c.Value(k) is TensorSequence other ? other.Items[i] : c.Value(k));
                var r = c.RunSubgraph(body, inputs);
                for (var k = 0; k < outs.Length; k++) outs[k].Add((Tensor)r[k]!);
            }
            for (var k = 0; k < outs.Length; k++)
                c.Set(k, new TensorSequence(outs[k], body.OutputTypes[k]));
        };
        d["Optional"] = c => c.Set(0, new OptionalValue(c.Value(0)));
        d["OptionalHasElement"] = c => c.Set(0, Tensor.Scalar(c.Value(0) switch { OptionalValue o => o.Value is not null, null => false, _ => true }));
        d["OptionalGetElement"] = c => c.Set(0, c.Value(0) switch
        {
            OptionalValue { Value: { } v } => v,
            OptionalValue => throw new KernelException("OptionalGetElement on an empty optional"),
            var v => v,
        });
    }
}
