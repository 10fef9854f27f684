using Kiln.Ir;

namespace Kiln.CodeGen.Planning;

/// <summary>Whether a plan is for <c>Run</c> (tensors in, tensors out) or a decoder's <c>Step</c> (tokens in, KV cache and logits in place).</summary>
public enum PlanMode { Run, Step }

/// <summary>Where a planned value lives.</summary>
public enum PlannedStorage
{
    /// <summary>A graph input tensor.</summary>
    Input,

    /// <summary>A decoding step's token ids: the span the caller passes.</summary>
    Tokens,

    /// <summary>A weight or other constant.</summary>
    Constant,

    /// <summary>Small i64 shape arithmetic computed from the input dims once per call.</summary>
    Known,

    /// <summary>A slot of the activation arena (<see cref="PlannedOperand.Slot"/>).</summary>
    Arena,

    /// <summary>Written straight into the returned output tensor (<see cref="PlannedOperand.OutputIndex"/>).</summary>
    Output,

    /// <summary>A view: the storage of <see cref="PlannedOperand.ViewOf"/> under other dims.</summary>
    Alias,

    /// <summary>A decoding step's logits: the caller's span.</summary>
    Logits,

    /// <summary>A present key or value appended to the KV cache in place (<see cref="PlannedOperand.Layer"/>, <see cref="PlannedOperand.Part"/>).</summary>
    KvCache,

    /// <summary>A past key or value: read only through the cache its present is appended to.</summary>
    KvPast,

    /// <summary>Computed inside the loop of the elementwise chain it belongs to, never stored.</summary>
    Fused,

    /// <summary>Returned by the operator entry of a node with no planned kernel (<see cref="MemoryPlan.Fallbacks"/>): a tensor local.</summary>
    Fallback,
}

/// <summary>A node with no planned kernel, run through its operator entry inside planned code, and why.</summary>
public sealed record PlanFallback(Kiln.Ir.Node Node, string Reason)
{
    public override string ToString() => $"node '{(string.IsNullOrEmpty(Node.Name) ? "#" + Node.Index : Node.Name)}' ({Node.QualifiedOp}): {Reason}";
}

/// <summary>Which half of a layer's KV cache a value is.</summary>
public enum KvPart { Keys, Values }

/// <summary>
/// One value as the plan places it and a backend reads it: element type, dims as C# int expressions, where it lives
/// (storage kind, arena slot, output index, cache layer), and the expressions the backend binds for it
/// (<see cref="Span"/>; for KV-cache values the distance between heads and, int8, the scales).
/// </summary>
public sealed record PlannedOperand(Value Value, DType Elem, string[] Dims, PlannedStorage Storage)
{
    /// <summary>The name the plan gives a computed value (its local in generated code), or an input's parameter.</summary>
    public string Local { get; init; } = "";

    /// <summary>The class field holding a constant (kernels cache packed forms of weights by it).</summary>
    public string? WeightField { get; init; }

    /// <summary>The arena slot of an <see cref="PlannedStorage.Arena"/> value; -1 otherwise.</summary>
    public int Slot { get; init; } = -1;

    /// <summary>The value whose storage a view shares.</summary>
    public Value? ViewOf { get; init; }

    /// <summary>For <see cref="PlannedStorage.Output"/>: the graph output written, and its dims (a view of this value may reshape it).</summary>
    public int OutputIndex { get; init; } = -1;

    public string[] OutputDims { get; init; } = [];

    /// <summary>For <see cref="PlannedStorage.KvCache"/>: the layer and half of the cache.</summary>
    public int Layer { get; init; } = -1;

    public KvPart Part { get; init; }

    /// <summary>For <see cref="PlannedStorage.KvCache"/>: whether the cache holds int8 codes with scales.</summary>
    public bool Int8Cache { get; init; }

    /// <summary>The expression holding the elements (bound by the backend).</summary>
    public string Span { get; init; } = "";

    /// <summary>For keys or values in the KV cache: the distance in elements between heads (bound by the backend).</summary>
    public string? HeadStride { get; init; }

    /// <summary>For keys or values in an int8 KV cache: the span of their scales (<see cref="Span"/> is then the int8 codes).</summary>
    public string? KvScales { get; init; }

    public int Rank => Dims.Length;

    /// <summary>The element count as a C# int expression.</summary>
    public string Count => CountOf(Dims);

    /// <summary>The dims as a span expression (stack-allocated: no garbage).</summary>
    public string Shape => Dims.Length == 0 ? "ReadOnlySpan<int>.Empty" : "stackalloc int[] { " + string.Join(", ", Dims) + " }";

    /// <summary>The C# element type of the span.</summary>
    public string ClrType => ClrTypeOf(Elem);

    public static string CountOf(string[] dims) => dims.Length == 0 ? "1" : "(" + string.Join(" * ", dims) + ")";

    public static string ClrTypeOf(DType e) => e switch
    {
        DType.F32 => "float",
        DType.F64 => "double",
        DType.I64 => "long",
        DType.I32 => "int",
        DType.Bool or DType.U8 => "byte",
        DType.I8 => "sbyte",
        _ => "",
    };
}

/// <summary>An operand of a fused elementwise step: a whole span, a one-element operand, or an earlier step's value.</summary>
public sealed record ElementwiseArg(PlannedOperand? Operand, bool IsScalar, int PreviousStep);

/// <summary>One node of a fused elementwise loop.</summary>
public sealed record ElementwiseStep(Node Node, IReadOnlyList<ElementwiseArg> Args);
