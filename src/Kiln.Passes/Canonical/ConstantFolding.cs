using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Inference;
using Kiln.Runtime;

namespace Kiln.Passes;

/// <summary>
/// <c>fold</c>: replaces values that can be computed at compile time with constants. Three sources:
/// shape arithmetic that inference resolved to numbers (the Shape → Gather → Unsqueeze → Concat chains exporters
/// emit around Reshape/Expand), nodes whose inputs are all constants (evaluated with the reference evaluator, so a
/// folded value is exactly what running the node gives), and no-op nodes (Identity, inference-mode Dropout, Cast
/// to the same type, Reshape/Expand to the same static shape), whose uses are pointed at their input.
/// Graph outputs stay computed by nodes. Options: <c>max-growth</c> (bytes a folded node may add beyond its inputs'
/// size, default 65536: folding must not turn a small ConstantOfShape or Expand into megabytes of weights),
/// <c>skip</c> (node-name globs to leave alone).
/// </summary>
public sealed class ConstantFolding : IPass
{
    public string Name => "fold";

    public string Summary => "fold constants, resolved shape arithmetic and no-op nodes";

    public IReadOnlyList<string> OptionNames => ["max-growth", "skip"];

    private static readonly HashSet<string> Nondeterministic = new(StringComparer.Ordinal)
    {
        "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    };

    public void Run(PassContext ctx)
    {
        var maxGrowth = ctx.Options.Int("max-growth", 65536, 0);
        var skip = ctx.Options.List("skip");
        var outputs = ctx.Graph.AllGraphs().SelectMany(g => g.Outputs).Select(o => o.Value).ToHashSet();
        var known = ShapeInference.RunAndCollectKnown(ctx.Graph);
        foreach (var g in ctx.Graph.AllGraphs().ToList())
        {
            foreach (var node in g.Nodes.ToList())
            {
                if (!g.Nodes.Contains(node) || Glob.MatchesAny(skip, node.Name)) continue;
                if (Nondeterministic.Contains(node.Op) && node.Domain.Length == 0) continue;
                if (FoldKnown(g, node, known, outputs)) { ctx.Count("shape values"); continue; }
                if (FoldNoOp(node, outputs)) { ctx.Count("no-ops"); continue; }
                if (FoldConstantInputs(g, node, outputs, maxGrowth)) ctx.Count("constant nodes");
            }
        }
    }

    /// <summary>Outputs inference computed to concrete numbers become constants.</summary>
    private static bool FoldKnown(Graph g, Node node, IReadOnlyDictionary<Value, SymbolicTensor> known, HashSet<Value> outputs)
    {
        var any = false;
        foreach (var o in node.Outputs.ToList())
        {
            if (o is null || outputs.Contains(o) || !known.TryGetValue(o, out var k) || k.Concrete is not { } values) continue;
            if (o.TensorType is not { } tt || tt.Elem != k.Elem) continue;
            g.ConvertToConstant(o, ToData(k.Elem, k.Shape, values));
            any = true;
        }
        return any;
    }

    private static TensorData ToData(DType elem, long[] shape, long[] values) => elem switch
    {
        DType.I64 => TensorData.FromArray(elem, shape, values),
        DType.I32 => TensorData.FromArray(elem, shape, values.Select(v => (int)v).ToArray()),
        DType.Bool => TensorData.FromArray(elem, shape, values.Select(v => (byte)(v != 0 ? 1 : 0)).ToArray()),
        _ => Kiln.Runtime.Kernels.Cast.To(Tensor.FromArray(DType.F64, shape.Select(d => (int)d).ToArray(), values.Select(v => (double)v).ToArray()), elem.ToRuntime()).ToTensorData(),
    };

    private static bool FoldNoOp(Node node, HashSet<Value> outputs)
    {
        if (node.Domain.Length != 0 || node.Outputs.Length == 0 || node.Outputs[0] is not { } y || outputs.Contains(y) || node.Inputs.Count == 0 || node.Inputs[0] is not { } x)
            return false;
        if (node.Outputs.Skip(1).Any(o => o is not null)) return false;
        var same = node.Op switch
        {
            "Identity" => x.Type is TensorType,
            "Dropout" => node.Inputs.Count < 3 || node.Inputs[2] is null || IsConstantFalse(node.Inputs[2]!),
            // Same element type and provably the same shape (equal dims, symbolic ones included) as the input.
            "Cast" or "CastLike" or "Reshape" or "Expand" => x.TensorType is { Shape: { } xs } xt && y.TensorType is { Shape: { } ys } yt
                && xt.Elem == yt.Elem && xs.Rank == ys.Rank && xs.Dims.Zip(ys.Dims).All(p => p.First.SameAs(p.Second)),
            _ => false,
        };
        if (!same) return false;
        Graph.ReplaceAllUses(y, x);
        return true;
    }

    private static bool IsConstantFalse(Value v) => v.Kind == ValueKind.Constant && v.Data is { } d && d.ElementCount == 1 && d.ToInt64Array()[0] == 0;

    private static bool FoldConstantInputs(Graph g, Node node, HashSet<Value> outputs, long maxGrowth)
    {
        if (node.Subgraphs.Any() || !Interpreter.Supports(node) || node.Inputs.Count == 0) return false;
        if (node.Inputs.Any(v => v is not null && v.Kind != ValueKind.Constant)) return false;
        if (node.Outputs.Any(o => o is not null && outputs.Contains(o))) return false;
        // Guess the outputs' size from their inferred types before running anything large.
        var inputBytes = node.Inputs.Sum(v => v?.Data?.ByteLength ?? 0);
        long outBytes = 0;
        foreach (var o in node.Outputs)
        {
            if (o is null) continue;
            if (o.TensorType is not { Shape: { } s } t || s.ToConcrete() is not { } dims || t.Elem == DType.String) return false;
            outBytes += t.Elem.ByteCount(dims.Aggregate(1L, (a, d) => a * d));
        }
        if (outBytes > inputBytes + maxGrowth) return false;
        object?[] results;
        try
        {
            results = Interpreter.EvaluateNode(node, node.Inputs.Select(v => (object?)v?.Data!.ToTensor()).ToArray());
        }
        catch (KernelException)
        {
            // The kernel's own check rejects these constants: leave the node, so running the model reports it where
            // it happens. Any other exception is a bug in Kiln and is not hidden here.
            return false;
        }
        for (var i = 0; i < node.Outputs.Length; i++)
        {
            if (node.Outputs[i] is not { } o) continue;
            if (results[i] is not Tensor t || t.Type.ToIr() != o.TensorType!.Elem) return false;
        }
        foreach (var (o, r) in node.Outputs.Zip(results).ToList())
            if (o is not null) g.ConvertToConstant(o, ((Tensor)r!).ToTensorData());
        return true;
    }
}
