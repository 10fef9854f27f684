using Kiln.Ir;

namespace Kiln.CodeGen.Backends;

/// <summary>
/// The seam between the emitter and a target. The emitter owns the class: its API, inputs, weights, subgraphs and
/// error reporting; a backend writes the statements that compute each node's outputs. The CPU backend calls
/// Kiln.Runtime; an ILGPU backend implements the same interface next to it, so passes never change for a target.
/// </summary>
public interface ICodeBackend
{
    /// <summary>The name <c>kiln compile --backend</c> takes.</summary>
    string Name { get; }

    /// <summary>Why the backend cannot compute this node, or null when it can.</summary>
    string? Unsupported(Node node);

    /// <summary>Writes the statements for one node: read inputs with <see cref="NodeEmitContext.Input"/>, declare outputs with <see cref="NodeEmitContext.Output"/>.</summary>
    void EmitNode(NodeEmitContext context);
}

/// <summary>What a backend sees while emitting one node.</summary>
public sealed class NodeEmitContext(ModelEmitter emitter, Node node, CodeWriter body)
{
    public Node Node { get; } = node;

    public CodeWriter Body { get; } = body;

    /// <summary>The C# expression for input i ("null" when absent).</summary>
    public string Input(int i) => i < Node.Inputs.Count && Node.Inputs[i] is { } v ? emitter.NameOf(v) : "null";

    /// <summary>Declares the local holding output i and returns its name.</summary>
    public string Output(int i) => emitter.Declare(Node.Outputs[i]!);

    /// <summary>A static field initialized once per class (operator entries, attribute sets), shared by equal initializers.</summary>
    public string Static(string type, string prefix, string initializer) => emitter.Static(type, prefix, initializer);

    /// <summary>The attribute-set expression for this node (a static field, or a per-call expression when it holds subgraphs).</summary>
    public string Attributes() => emitter.AttributesOf(Node, Body);
}

/// <summary>
/// A backend that can also emit planned code: every value in a slot of one activation arena (or an output tensor,
/// or the KV cache) with its dims computed from the call's symbols, each node a kernel call that writes into its
/// output's span and allocates nothing. The emitter plans storage; the backend writes the calls.
/// </summary>
public interface IPlannedCodeBackend
{
    /// <summary>Why this node cannot run planned (the whole model then runs through <see cref="ICodeBackend.EmitNode"/>), or null.</summary>
    string? UnsupportedPlanned(PlannedNodeContext context);

    /// <summary>Writes the kernel call(s) computing the node's outputs into their spans.</summary>
    void EmitPlanned(PlannedNodeContext context);

    /// <summary>Whether the backend can compute this f32 elementwise op inside a fused loop (<see cref="EmitElementwiseLoop"/>).</summary>
    bool IsFusableElementwise(Node node);

    /// <summary>
    /// One loop computing a chain of elementwise nodes, each reading whole operands, scalars or the previous steps'
    /// values; only the last step's value is stored (intermediates never touch memory).
    /// </summary>
    void EmitElementwiseLoop(CodeWriter body, IReadOnlyList<ElementwiseStep> steps, PlannedOperand output);
}

/// <summary>An operand of a fused elementwise step: a whole span, a one-element operand, or an earlier step's value.</summary>
public sealed record ElementwiseArg(PlannedOperand? Operand, bool IsScalar, int PreviousStep);

/// <summary>One node of a fused elementwise loop.</summary>
public sealed record ElementwiseStep(Node Node, IReadOnlyList<ElementwiseArg> Args);

/// <summary>Where a planned value lives.</summary>
public enum PlannedStorage { Input, Constant, Known, Arena, Output, Alias, Logits, KvCache, KvPast, Fused }

/// <summary>
/// One value as planned code sees it: element type, dims as C# int expressions, the span expression holding it,
/// the weight tensor field when it is a constant (kernels cache packed forms of weights), and for KV-cache values
/// the distance in elements between heads.
/// </summary>
public sealed record PlannedOperand(Value Value, ElementType Elem, string[] Dims, string Span, PlannedStorage Storage, string? WeightField, string? HeadStride)
{
    /// <summary>For keys or values in an int8 KV cache: the span of their scales (<see cref="Span"/> is then the int8 codes).</summary>
    public string? KvScales { get; init; }

    public int Rank => Dims.Length;

    /// <summary>The element count as a C# int expression.</summary>
    public string Count => Dims.Length == 0 ? "1" : "(" + string.Join(" * ", Dims) + ")";

    /// <summary>The dims as a span expression (stack-allocated: no garbage).</summary>
    public string Shape => Dims.Length == 0 ? "ReadOnlySpan<int>.Empty" : "stackalloc int[] { " + string.Join(", ", Dims) + " }";

    /// <summary>The C# element type of the span.</summary>
    public string ClrType => ClrTypeOf(Elem);

    public static string ClrTypeOf(ElementType e) => e switch
    {
        ElementType.F32 => "float",
        ElementType.F64 => "double",
        ElementType.I64 => "long",
        ElementType.I32 => "int",
        ElementType.Bool or ElementType.U8 => "byte",
        ElementType.I8 => "sbyte",
        _ => "",
    };
}

/// <summary>What a planned backend sees while emitting one node.</summary>
public sealed class PlannedNodeContext(Node node, CodeWriter body, IReadOnlyList<PlannedOperand?> inputs, IReadOnlyList<PlannedOperand?> outputs)
{
    public Node Node { get; } = node;

    public CodeWriter Body { get; } = body;

    public PlannedOperand? In(int i) => i < inputs.Count ? inputs[i] : null;

    public PlannedOperand? Out(int i) => i < outputs.Count ? outputs[i] : null;

    public int InputCount => inputs.Count;

    /// <summary>
    /// Set on the node computing a decoding step's logits: the C# condition under which only each row's last
    /// position is wanted (rows r·seq + seq − 1 of the input, written to row r of the output).
    /// </summary>
    public string? LastRowsOnly { get; init; }
}
