using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Ir.Inference;

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
public sealed class NodeEmitContext
{
    private readonly ModelEmitter _emitter;
    private readonly Func<int, string> _input;
    private readonly Func<int, string> _output;

    /// <summary>A node of unplanned code: inputs and outputs are the emitter's locals.</summary>
    public NodeEmitContext(ModelEmitter emitter, Node node, CodeWriter body)
        : this(emitter, node, body, i => i < node.Inputs.Count && node.Inputs[i] is { } v ? emitter.NameOf(v) : "null", i => emitter.Declare(node.Outputs[i]!))
    {
    }

    /// <summary>A node whose input expressions and output locals the caller names (a generic call inside planned code).</summary>
    public NodeEmitContext(ModelEmitter emitter, Node node, CodeWriter body, Func<int, string> input, Func<int, string> output)
    {
        (_emitter, Node, Body, _input, _output) = (emitter, node, body, input, output);
    }

    public Node Node { get; }

    public CodeWriter Body { get; }

    /// <summary>The C# expression for input i ("null" when absent).</summary>
    public string Input(int i) => _input(i);

    /// <summary>Declares the local holding output i and returns its name.</summary>
    public string Output(int i) => _output(i);

    /// <summary>A static field initialized once per class (operator entries, attribute sets), shared by equal initializers.</summary>
    public string Static(string type, string prefix, string initializer) => _emitter.Static(type, prefix, initializer);

    /// <summary>The attribute-set expression for this node (a static field, or a per-call expression when it holds subgraphs).</summary>
    public string Attributes() => _emitter.AttributesOf(Node, Body);
}

/// <summary>
/// A backend that can also emit planned code from a <see cref="MemoryPlan"/>: every value in storage the backend owns
/// (on the CPU, spans over one activation arena, output tensors, the KV cache) with its dims computed from the
/// call's symbols, each node a kernel call that writes into its output's storage and allocates nothing. Planning
/// asks the backend what it can compute; the backend binds each planned value to an expression, declares storage,
/// and writes the calls.
/// </summary>
public interface IPlannedCodeBackend
{
    /// <summary>Why this node has no planned kernel (it then runs through <see cref="ICodeBackend.EmitNode"/> where it stands), or null.</summary>
    string? UnsupportedPlanned(PlannedNodeContext context);

    /// <summary>Writes the kernel call(s) computing the node's outputs into their storage.</summary>
    void EmitPlanned(PlannedNodeContext context);

    /// <summary>Whether the backend can compute this f32 elementwise op inside a fused loop (<see cref="EmitElementwiseLoop"/>).</summary>
    bool IsFusableElementwise(Node node);

    /// <summary>
    /// One loop computing a chain of elementwise nodes, each reading whole operands, scalars or the previous steps'
    /// values; only the last step's value is stored (intermediates never touch memory).
    /// </summary>
    void EmitElementwiseLoop(CodeWriter body, IReadOnlyList<ElementwiseStep> steps, PlannedOperand output);

    /// <summary>
    /// Whether the node (a step's logits) can compute only each row's last position (<see cref="PlannedNodeContext.LastRowsOnly"/>);
    /// asked only of nodes <see cref="UnsupportedPlanned"/> accepted.
    /// </summary>
    bool ComputesLastRowsOnly(PlannedNodeContext context);

    /// <summary>The value with the expressions that hold it in this backend's storage (<see cref="PlannedOperand.Span"/>, and for the KV cache its head stride and scales).</summary>
    PlannedOperand Bind(PlannedOperand value);

    /// <summary>Declares the plan's storage before any node runs (on the CPU: the arena's slots, sized from this call's dims).</summary>
    void EmitStorage(CodeWriter body, MemoryPlan plan);

    /// <summary>Declares a value computed from the input dims (<see cref="PlannedStorage.Known"/>).</summary>
    void EmitKnown(CodeWriter body, PlannedOperand value, SymbolicTensor known, IReadOnlyDictionary<string, string> symbolLocals);

    /// <summary>Declares the storage a node writes, just before it runs: an arena slot, or graph output i's tensor, the local <c>o{i}</c>.</summary>
    void EmitAllocation(CodeWriter body, PlannedOperand value);

    /// <summary>Copies a value into a new tensor for graph output i, the local <c>o{i}</c>.</summary>
    void EmitOutputCopy(CodeWriter body, int index, PlannedOperand value);

    /// <summary>An expression for the value as a runtime tensor, for an operator entry to read (declaring <paramref name="local"/>, a copy, when it lives in planned storage).</summary>
    string EmitTensorOf(CodeWriter body, PlannedOperand value, string local);
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

    /// <summary>A static field of the generated class (type, name prefix, initializer), shared by equal initializers: a kernel's fixed geometry.</summary>
    public Func<string, string, string, string> Static { get; init; } = (_, _, _) => throw new InvalidOperationException("no class to hold a static field while planning");
}
