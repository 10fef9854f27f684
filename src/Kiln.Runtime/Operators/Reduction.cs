using Kiln.Runtime.Kernels;

namespace Kiln.Runtime.Operators;

public static partial class OperatorTable
{
    private static void RegisterReduction(Dictionary<string, Action<OpContext>> d)
    {
        void R(string name, ReduceKind kind) => d[name] = c =>
        {
            var x = c.In(0);
            var axesT = c.Opt(1);
            var keep = c.Int("keepdims") != 0;
            int[] axes;
            if (axesT is null || axesT.Length == 0)
            {
                if (c.Int("noop_with_empty_axes") != 0) { c.Set(0, x); return; }
                axes = Enumerable.Range(0, x.Rank).ToArray();
            }
            else axes = axesT.ToLongs().Select(a => Movement.NormalizeAxis(a, x.Rank, name)).Distinct().ToArray();
            c.Set(0, Reduce.Run(x, axes, keep, kind));
        };
        R("ReduceSum", ReduceKind.Sum); R("ReduceMean", ReduceKind.Mean); R("ReduceMax", ReduceKind.Max); R("ReduceMin", ReduceKind.Min);
        R("ReduceProd", ReduceKind.Prod); R("ReduceL1", ReduceKind.L1); R("ReduceL2", ReduceKind.L2); R("ReduceLogSum", ReduceKind.LogSum);
        R("ReduceLogSumExp", ReduceKind.LogSumExp); R("ReduceSumSquare", ReduceKind.SumSquare);
        void A(string name, bool max) => d[name] = c =>
        {
            var x = c.In(0);
            c.Set(0, Reduce.ArgExtreme(x, Movement.NormalizeAxis(c.Int("axis"), x.Rank, name), c.Int("keepdims") != 0, c.Int("select_last_index") != 0, max));
        };
        A("ArgMax", true);
        A("ArgMin", false);
        foreach (var kind in new[] { "Softmax", "LogSoftmax", "Hardmax" })
        {
            var k = kind;
            d[k] = c =>
            {
                var x = c.In(0);
                c.Set(0, Normalization.Softmax(x, x.Rank == 0 ? 0 : Movement.NormalizeAxis(c.Int("axis"), x.Rank, k), k));
            };
        }
    }
}
