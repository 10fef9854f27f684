using Kiln.Ir.Inference;
using Kiln.Runtime.Operators;

namespace Kiln.Ir.Ops;

/// <summary>
/// Kiln's own ops (domain <c>kiln</c>), produced by the <c>fuse</c> pass from the patterns exporters emit: one node
/// where the source graph had a chain, so a backend runs one kernel over the data once. Each has a reference
/// kernel in Kiln.Runtime (Kernels/Fused.cs) that the evaluator runs, so fused graphs stay checkable.
/// </summary>
internal static class FusedOps
{
    public const string Domain = KilnOp.Domain;

    public static void Register(OpRegistry r)
    {
        // y = x / sqrt(mean(x², last axis) + epsilon) * scale
        r.Add(KilnOp.RmsNorm, "X, scale", "Y", "epsilon:float=0.00001", Rules.SameAsInput, domain: Domain);
        // y = x * sigmoid(x)
        r.Add(KilnOp.SiLU, "X", "Y", "", Rules.SameAsInput, domain: Domain).With(OpTraits.Elementwise);
        // y = x * 0.5 * (1 + erf(x / √2)) (approximate="none") or the tanh form (approximate="tanh")
        r.Add(KilnOp.Gelu, "X", "Y", "approximate:string=none", Rules.SameAsInput, domain: Domain).With(OpTraits.Elementwise);
        // Rotary position embedding over the last axis: pairs (x[2i], x[2i+1]) when interleaved, else (x[i], x[i+d/2]),
        // rotated by the angle whose cos/sin are given per position [seq, d/2] (broadcast over leading axes).
        r.Add(KilnOp.RotaryEmbedding, "X, cos, sin", "Y", "interleaved:int=1", Rules.SameAsInput, domain: Domain);
        // softmax(Q·Kᵀ·scale + mask)·V with K/V shared by groups of query heads (grouped-query attention).
        // Q [b, heads, s, d], K and V [b, kv_heads, t, d], mask additive and broadcastable to [b, heads, s, t].
        // kv_bits=8 (quantize-kv): K and V are read as an int8 KV cache holds them, per position and head.
        r.Add(KilnOp.GroupQueryAttention, "Q, K, V, mask?", "Y", "scale:float!, kv_bits:int=0", c =>
        {
            c.Set(0, c.InputType(0));
        }, domain: Domain).With(OpTraits.ReadsKeyValueCache);
        // A·B + C, then an optional activation (Relu, SiLU, GELU, Sigmoid, Tanh); C broadcasts to the product.
        r.Add(KilnOp.MatMulAdd, "A, B, C", "Y", "activation:string=", c =>
        {
            var a = c.ShapeOf(0);
            var b = c.ShapeOf(1);
            if (a is null || b is null || a.Rank < 2 || b.Rank != 2) { c.Set(0, c.Elem(0), (Shape?)null); return; }
            var product = new Shape(a.Dims.Take(a.Rank - 1).Append(b[1]));
            c.Set(0, c.Elem(0), Rules.Broadcast(c, product, c.ShapeOf(2)));
        }, domain: Domain).With(OpTraits.RowIndependent);
        // Conv followed by an activation applied to its output.
        // activation_params: LeakyRelu [alpha], HardSigmoid [alpha, beta], Clip [min, max].
        r.Add(KilnOp.ConvActivation, "X, W, B?", "Y", "activation:string!, activation_params:floats?, " + ConvOps.ConvAttrs,
            c => c.Set(0, c.Elem(0), ConvOps.ConvShape(c, c.ShapeOf(0), c.ShapeOf(1))), domain: Domain);
    }
}
