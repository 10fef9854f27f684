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
