namespace Kiln.Ir;

/// <summary>One operation: an op of a domain applied to inputs, defining outputs. Absent optional inputs and outputs are null.</summary>
public sealed class Node
{
    private readonly Value?[] _inputs;

    internal Node(Graph owner, string op, string domain, string? name, Value?[] inputs, int outputCount, IDictionary<string, AttrValue>? attributes)
    {
        Owner = owner;
        Op = op;
        Domain = domain;
        Name = name;
        _inputs = inputs;
        Outputs = new Value?[outputCount];
        Attributes = attributes is null ? [] : new Dictionary<string, AttrValue>(attributes);
        for (var i = 0; i < inputs.Length; i++) inputs[i]?.AddUse(this, i);
    }

    public Graph Owner { get; }

    public string Op { get; }

    /// <summary>"" for the default ONNX domain.</summary>
    public string Domain { get; }

    public string? Name { get; set; }

    public IReadOnlyList<Value?> Inputs => _inputs;

    public Value?[] Outputs { get; }

    /// <summary>Attributes in the order they were given.</summary>
    public Dictionary<string, AttrValue> Attributes { get; }

    /// <summary>The op's display name: <c>Op</c> or <c>domain:Op</c>.</summary>
    public string QualifiedOp => Domain.Length == 0 ? Op : $"{Domain}:{Op}";

    public int Index => Owner.Nodes.IndexOf(this);

    public void SetInput(int index, Value? value)
    {
        _inputs[index]?.RemoveUse(this, index);
        _inputs[index] = value;
        value?.AddUse(this, index);
    }

    public T? Attr<T>(string name) where T : AttrValue => Attributes.TryGetValue(name, out var a) ? a as T : null;

    /// <summary>An int attribute, or the default the op's registry definition declares: read one way, the default written once.</summary>
    public long AttrInt(string name) => Attr<IntAttr>(name)?.Value ?? RegistryDefault<IntAttr>(name).Value;

    /// <summary>A float attribute, or the op's registry default.</summary>
    public float AttrFloat(string name) => Attr<FloatAttr>(name)?.Value ?? RegistryDefault<FloatAttr>(name).Value;

    /// <summary>A string attribute, or the op's registry default.</summary>
    public string AttrString(string name) => Attr<StringAttr>(name)?.Value ?? RegistryDefault<StringAttr>(name).Value;

    /// <summary>Whether the op's registry definition declares all of these traits (false for an op the registry does not know).</summary>
    public bool Has(Ops.OpTraits traits) => Ops.OpRegistry.Default.Find(Domain, Op) is { } def && (def.Traits & traits) == traits;

    private T RegistryDefault<T>(string name) where T : AttrValue =>
        Ops.OpRegistry.Default.Find(Domain, Op)?.FindAttribute(name)?.Default as T
        ?? throw new InvalidOperationException($"{QualifiedOp} has no attribute '{name}' of that kind with a default (a required attribute is checked by the verifier)");

    /// <summary>Subgraphs held in attributes (If branches, Loop/Scan bodies).</summary>
    public IEnumerable<Graph> Subgraphs =>
        Attributes.Values.SelectMany(a => a switch
        {
            GraphAttr g => [g.Value],
            GraphsAttr gs => gs.Value,
            _ => Array.Empty<Graph>(),
        });

    internal void DetachInputs()
    {
        for (var i = 0; i < _inputs.Length; i++) _inputs[i]?.RemoveUse(this, i);
    }

    public override string ToString() => $"{QualifiedOp}{(Name is null ? "" : $" '{Name}'")}";
}
