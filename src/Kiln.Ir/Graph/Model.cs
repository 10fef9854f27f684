namespace Kiln.Ir;

/// <summary>A model: the main graph plus what the file said about itself. Owns the mapped files its constants point into.</summary>
public sealed class Model : IDisposable
{
    public Model(Graph graph) => Graph = graph;

    public Graph Graph { get; }

    public long IrVersion { get; set; } = 8;

    public string ProducerName { get; set; } = "";

    public string ProducerVersion { get; set; } = "";

    public string Domain { get; set; } = "";

    public long ModelVersion { get; set; }

    /// <summary>Opsets the source file imported (domain → version). The IR itself is in Kiln's canonical op forms.</summary>
    public SortedDictionary<string, long> OpsetImports { get; } = new(StringComparer.Ordinal);

    public List<KeyValuePair<string, string>> Metadata { get; } = [];

    /// <summary>Where the model was read from, for diagnostics.</summary>
    public string? SourcePath { get; set; }

    /// <summary>Mapped files and other resources kept alive while the model's constants are in use.</summary>
    public List<IDisposable> Resources { get; } = [];

    public void Dispose()
    {
        foreach (var r in Resources) r.Dispose();
        Resources.Clear();
    }
}
