using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the ControlFlow family: control flow (If, Loop, Scan). The ops are declared in Kiln.Ir/Ops/ControlFlowOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterControlFlow(Dictionary<string, Action<OpContext>> d)
    {
        d["If"] = c =>
        {
            var cond = c.In(0).GetLong(0) != 0;
            var outs = c.RunSubgraph(c.Graph(cond ? "then_branch" : "else_branch"), []);
            for (var i = 0; i < c.OutputCount; i++) c.Set(i, outs[i]);
        };
        d["Loop"] = c =>
        {
            var body = c.Graph("body");
            long? max = c.Opt(0) is { } m ? m.GetLong(0) : null;
            var cond = c.Opt(1) is not { } ct || ct.GetLong(0) != 0;
            var carried = Enumerable.Range(2, c.InputCount - 2).Select(c.Value).ToArray();
            var scanCount = body.OutputCount - 1 - carried.Length;
            var scans = Enumerable.Range(0, scanCount).Select(_ => new List<Tensor>()).ToArray();
            long i = 0;
            while (cond && (max is null || i < max))
            {
                var inputs = new List<object?> { Tensor.Scalar(i), Tensor.Scalar(cond) };
                inputs.AddRange(carried);
                var outs = c.RunSubgraph(body, inputs);
                cond = outs[0] is Tensor t ? t.GetLong(0) != 0 : cond;
                for (var k = 0; k < carried.Length; k++) carried[k] = outs[1 + k];
                for (var k = 0; k < scanCount; k++) scans[k].Add((Tensor)outs[1 + carried.Length + k]!);
                i++;
            }
            for (var k = 0; k < carried.Length; k++) c.Set(k, carried[k]);
            for (var k = 0; k < scanCount; k++) c.Set(carried.Length + k, Stack(scans[k], body, 1 + carried.Length + k));
        };
        d["Scan"] = c =>
        {
            var body = c.Graph("body");
            var m = (int)c.Int("num_scan_inputs");
            var n = c.InputCount - m;
            var scanIn = Enumerable.Range(n, m).Select(c.In).ToArray();
            var inAxes = c.Ints("scan_input_axes") ?? new long[m];
            var inDirs = c.Ints("scan_input_directions") ?? new long[m];
            var k = body.OutputCount - n;
            var outAxes = c.Ints("scan_output_axes") ?? new long[k];
            var outDirs = c.Ints("scan_output_directions") ?? new long[k];
            var axes = scanIn.Select((t, j) => Movement.NormalizeAxis(inAxes[j], t.Rank, "Scan")).ToArray();
            var steps = m == 0 ? 0 : scanIn[0].Shape[axes[0]];
            var state = Enumerable.Range(0, n).Select(c.Value).ToArray();
            var collected = Enumerable.Range(0, k).Select(_ => new List<Tensor>()).ToArray();
            for (var t = 0; t < steps; t++)
            {
                var inputs = new List<object?>(state);
                for (var j = 0; j < m; j++)
                {
                    var pos = inDirs[j] == 1 ? steps - 1 - t : t;
                    var slice = SliceAxis(scanIn[j], axes[j], pos, pos + 1);
                    inputs.Add(slice.Reshape(slice.Shape.Where((_, a) => a != axes[j]).ToArray()));
                }
                var outs = c.RunSubgraph(body, inputs);
                for (var j = 0; j < n; j++) state[j] = outs[j];
                for (var j = 0; j < k; j++) collected[j].Add((Tensor)outs[n + j]!);
            }
            for (var j = 0; j < n; j++) c.Set(j, state[j]);
            for (var j = 0; j < k; j++)
            {
                var items = collected[j];
                if (outDirs[j] == 1) items.Reverse();
                var stacked = Stack(items, body, n + j);
                var axis = Movement.NormalizeAxis(outAxes[j], stacked.Rank, "Scan");
                if (axis != 0)
                {
                    var perm = Enumerable.Range(1, stacked.Rank - 1).ToList();
                    perm.Insert(axis, 0);
                    stacked = Movement.Transpose(stacked, perm.ToArray());
                }
                c.Set(n + j, stacked);
            }
        };
    }

    private static TensorSequence Seq(OpContext c, int i) =>
        c.Value(i) as TensorSequence ?? throw new KernelException($"input {i} is a {Values.Describe(c.Value(i))}, not a sequence");

    private static int SeqPos(long pos, int count, bool insert)
    {
        var limit = insert ? count : count - 1;
        if (pos < -count || pos > limit) throw new KernelException($"sequence position {pos} is out of range for {count} items");
        return (int)(pos < 0 ? pos + count : pos);
    }

    /// <summary>Stacks tensors along a new leading axis (Loop/Scan outputs); an empty list gives a [0, …] tensor of the declared type.</summary>
    private static Tensor Stack(List<Tensor> items, Subgraph body, int output)
    {
        if (items.Count == 0)
        {
            var shape = body.OutputShapes[output] ?? [];
            return Tensor.Zeros(body.OutputTypes[output] ?? DType.F32, [0, .. shape]);
        }
        return Movement.Concat(items.Select(t => t.Reshape([1, .. t.Shape])).ToList(), 0);
    }
}
