using Kiln.Ir;

namespace Kiln.CodeGen;

/// <summary>What to call the generated class and what it was compiled from.</summary>
public sealed record EmitOptions(string Namespace, string ClassName, string ModelHash, string SourceName, string Pipeline);

/// <summary>A tensor the blob writer stores, under the name the generated code asks for.</summary>
public sealed record BlobTensor(string Name, TensorData Data);

/// <summary>The generated C# and the weights it loads.</summary>
/// <param name="FullyPlanned">every node runs from the plan: the run (and, for a decoder, its step) was planned as a whole</param>
public sealed record EmittedModel(string ClassName, string Source, IReadOnlyList<BlobTensor> Weights, int NodeCount, string Activations, bool FullyPlanned)
{
    /// <summary>The memory plan as text, one line per computed value and per elementwise chain, for each planned entry (Run, Step); empty when nothing was planned.</summary>
    public string Plan { get; init; } = "";

    /// <summary>Nodes the generated code runs through a generic operator entry (<c>Generated.Call</c>) instead of a planned kernel: 0 when fully planned.</summary>
    public int GenericCalls { get; init; }
}
