using Kiln.Runtime.Kernels;
using E = Kiln.Runtime.Kernels.Elementwise;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Kiln.Runtime.Operators;

/// <summary>Operator entries of the Activation family: activations and other shape-preserving ops (Relu … Gelu, Dropout, CumSum, Trilu, LRN). The ops are declared in Kiln.Ir/Ops/ActivationOps.cs.</summary>
public static partial class OperatorTable
{
    private static void RegisterActivation(Dictionary<string, Action<OpContext>> d)
    {
        d["LRN"] = c => c.Set(0, Normalization.Lrn(c.In(0), (int)c.Int("size"), c.Float("alpha"), c.Float("beta"), c.Float("bias")));
        d["MeanVarianceNormalization"] = c =>
        {
            var x = c.In(0);
            var axes = c.Ints("axes")?.Select(a => Movement.NormalizeAxis(a, x.Rank, "MeanVarianceNormalization")).ToArray() ?? [0, 2, 3];
            var mean = Reduce.Run(x, axes, true, ReduceKind.Mean);
            var centered = E.Numeric<E.SubOp>(x, mean);
            var var = Reduce.Run(E.Numeric<E.MulOp>(centered, centered), axes, true, ReduceKind.Mean);
            var std = E.Float<E.SqrtOp>(var);
            c.Set(0, E.Numeric<E.DivOp>(centered, E.Numeric<E.AddOp>(std, Cast.To(Tensor.Scalar(1e-9f), x.Type))));
        };
        d["CumSum"] = c =>
        {
            var x = c.In(0);
            var axis = Movement.NormalizeAxis(c.In(1).GetLong(0), x.Rank, "CumSum");
            bool exclusive = c.Int("exclusive") != 0, reverse = c.Int("reverse") != 0;
            var outer = Tensor.Count(x.Shape[..axis]);
            var dim = x.Shape[axis];
            var inner = Tensor.Count(x.Shape[(axis + 1)..]);
            var v = x.ToDoubles();
            var r = new double[v.Length];
            for (long o = 0; o < outer; o++)
                for (long i = 0; i < inner; i++)
                {
                    double acc = 0;
                    for (var k = 0; k < dim; k++)
                    {
                        var kk = reverse ? dim - 1 - k : k;
                        var at = (o * dim + kk) * inner + i;
                        if (exclusive) { r[at] = acc; acc += v[at]; }
                        else { acc += v[at]; r[at] = acc; }
                    }
                }
            c.Set(0, Movement.FromDoubles(x.Type, x.Shape, r));
        };
        d["Trilu"] = c =>
        {
            var x = c.In(0);
            var k = c.Opt(1)?.GetLong(0) ?? 0;
            var upper = c.Int("upper") != 0;
            int rows = x.Shape[^2], cols = x.Shape[^1];
            var idx = new long[x.Length];
            for (long i = 0; i < x.Length; i++)
            {
                var col = i % cols;
                var row = i / cols % rows;
                var keep = upper ? col - row >= k : col - row <= k;
                idx[i] = keep ? i : -1;
            }
            var r = Tensor.Zeros(x.Type, x.Shape);
            Movement.Take(x, r, idx);
            c.Set(0, r);
        };

        d["Relu"] = c => c.Set(0, Activations.Relu(c.In(0)));
        d["LeakyRelu"] = c => { var a = c.Float("alpha"); c.Set(0, Activations.Map(c.In(0), x => x >= 0 ? x : a * x)); };
        d["Elu"] = c => { var a = c.Float("alpha"); c.Set(0, Activations.Map(c.In(0), x => x >= 0 ? x : a * (Math.Exp(x) - 1))); };
        d["Celu"] = c => { var a = c.Float("alpha"); c.Set(0, Activations.Map(c.In(0), x => Math.Max(0, x) + Math.Min(0, a * (Math.Exp(x / a) - 1)))); };
        d["Selu"] = c =>
        {
            double a = c.Float("alpha"), g = c.Float("gamma");
            c.Set(0, Activations.Map(c.In(0), x => x > 0 ? g * x : g * (a * Math.Exp(x) - a)));
        };
        d["HardSigmoid"] = c => { double a = c.Float("alpha"), b = c.Float("beta"); c.Set(0, Activations.Map(c.In(0), x => Math.Max(0, Math.Min(1, a * x + b)))); };
        d["HardSwish"] = c => c.Set(0, Activations.Map(c.In(0), x => x * Math.Max(0, Math.Min(1, x / 6 + 0.5))));
        d["Softplus"] = c => c.Set(0, Activations.Map(c.In(0), x => x > 30 ? x : Math.Log(1 + Math.Exp(x))));
        d["Softsign"] = c => c.Set(0, Activations.Map(c.In(0), x => x / (1 + Math.Abs(x))));
        d["ThresholdedRelu"] = c => { double a = c.Float("alpha"); c.Set(0, Activations.Map(c.In(0), x => x > a ? x : 0)); };
        d["Mish"] = c => c.Set(0, Activations.Map(c.In(0), x => x * Math.Tanh(x > 30 ? x : Math.Log(1 + Math.Exp(x)))));
        d["Gelu"] = c =>
        {
            var tanh = c.Str("approximate") == "tanh";
            c.Set(0, Activations.Map(c.In(0), x => tanh
                ? 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)))
                : 0.5 * x * (1 + SpecialFunctions.Erf(x / Math.Sqrt(2)))));
        };
        d["Shrink"] = c =>
        {
            double b = c.Float("bias"), l = c.Float("lambd");
            c.Set(0, Activations.Map(c.In(0), x => x < -l ? x + b : x > l ? x - b : 0));
        };
        d["Dropout"] = c =>
        {
            var x = c.In(0);
            var training = c.Opt(2) is { } tm && tm.GetLong(0) != 0;
            var ratio = c.Opt(1) is { } rt ? rt.GetDouble(0) : 0.5;
            if (training && ratio > 0) throw new KernelException("Dropout in training mode is random; the evaluator runs inference only");
            c.Set(0, x);
            if (c.WantsOutput(1))
            {
                var mask = Tensor.Zeros(DType.Bool, x.Shape);
                mask.Span<byte>().Fill(1);
                c.Set(1, mask);
            }
        };
    }
}
