namespace Kiln.Ir;

/// <summary>A graph output: the value it returns, under the name and type the model declares.</summary>
public sealed class GraphOutput(string name, Value value, IrType declaredType)
{
    public string Name { get; set; } = name;

    public Value Value { get; set; } = value;

    /// <summary>The type the model declares (printed in the signature); the value's own type is what inference computed.</summary>
    public IrType DeclaredType { get; set; } = declaredType;
}

/// <summary>
/// A graph in SSA form: inputs, constants, nodes in topological order, outputs. Subgraphs (If/Loop/Scan bodies)
/// are graphs whose <see cref="Parent"/> is set; their nodes may use values of enclosing graphs.
/// </summary>
public sealed class Graph
{
    private readonly Dictionary<string, Value> _byName = new(StringComparer.Ordinal);

    public Graph(string name, Graph? parent = null)
    {
        Name = name;
        Parent = parent;
    }

    public string Name { get; set; }

    public Graph? Parent { get; internal set; }

    public List<Value> Inputs { get; } = [];

    public List<Value> Constants { get; } = [];

    public List<Node> Nodes { get; } = [];

    public List<GraphOutput> Outputs { get; } = [];

    /// <summary>Symbols the model declares that inference found to equal an expression (<c>total_seq = past_seq + seq</c>).</summary>
    public SortedDictionary<string, Dim> Bindings { get; } = new(StringComparer.Ordinal);

    /// <summary>Looks a value up by name in this graph, then in enclosing graphs.</summary>
    public Value? Lookup(string name)
    {
        for (var g = this; g is not null; g = g.Parent)
            if (g._byName.TryGetValue(name, out var v)) return v;
        return null;
    }

    /// <summary><paramref name="name"/> if no value in scope has it, else the first of name2, name3, … that is free.</summary>
    public string UniqueName(string name)
    {
        var unique = name;
        for (var k = 2; Lookup(unique) is not null; k++) unique = name + k;
        return unique;
    }

    /// <summary>Looks a value up in this graph only.</summary>
    public Value? LookupLocal(string name) => _byName.GetValueOrDefault(name);

    private void Define(Value v)
    {
        if (!_byName.TryAdd(v.Name, v))
            throw new Diagnostics.KilnException(new Diagnostics.Diagnostic(Diagnostics.DiagnosticCode.DuplicateDefinition,
                $"value '{v.Name}' is defined more than once in graph '{Name}'"));
        v.Owner = this;
    }

    public Value AddInput(string name, IrType type)
    {
        var v = new Value(name, type, ValueKind.GraphInput);
        Define(v);
        Inputs.Add(v);
        return v;
    }

    public Value AddConstant(string name, TensorData data)
    {
        var v = new Value(name, data.Type, ValueKind.Constant) { Data = data };
        Define(v);
        Constants.Add(v);
        return v;
    }

    /// <summary>Appends a node; its outputs are named by <paramref name="outputNames"/> (null entries are absent outputs).</summary>
    public Node AddNode(string op, string domain, string? name, Value?[] inputs, IReadOnlyList<string?> outputNames,
        IDictionary<string, AttrValue>? attributes = null, IReadOnlyList<IrType>? outputTypes = null)
    {
        var node = new Node(this, op, domain, name, inputs, outputNames.Count, attributes);
        for (var i = 0; i < outputNames.Count; i++)
        {
            if (outputNames[i] is not { } n) continue;
            var v = new Value(n, outputTypes?[i] ?? IrType.Unknown, ValueKind.NodeOutput) { Producer = node };
            Define(v);
            node.Outputs[i] = v;
        }
        Nodes.Add(node);
        return node;
    }

    public void AddOutput(Value value, IrType? declaredType = null, string? name = null) =>
        Outputs.Add(new GraphOutput(name ?? value.Name, value, declaredType ?? value.Type));

    /// <summary>Removes a node that nothing uses any more.</summary>
    public void RemoveNode(Node node)
    {
        foreach (var o in node.Outputs)
        {
            if (o is null) continue;
            if (o.Uses.Count > 0) throw new InvalidOperationException($"cannot remove {node}: {o} still has uses");
            _byName.Remove(o.Name);
        }
        node.DetachInputs();
        Nodes.Remove(node);
    }

    /// <summary>
    /// Turns a node's output into a constant holding <paramref name="data"/>, keeping its name and uses; the producer
    /// loses that output and is removed once it has none left. Used by folding.
    /// </summary>
    public void ConvertToConstant(Value value, TensorData data)
    {
        if (value.Kind != ValueKind.NodeOutput || value.Producer is not { } producer || value.Owner != this)
            throw new InvalidOperationException($"{value} is not a node output of graph '{Name}'");
        var slot = Array.IndexOf(producer.Outputs, value);
        producer.Outputs[slot] = null;
        value.Producer = null;
        value.Kind = ValueKind.Constant;
        value.Data = data;
        value.Type = data.Type;
        Constants.Add(value);
        if (producer.Outputs.All(o => o is null))
        {
            producer.DetachInputs();
            Nodes.Remove(producer);
        }
    }

    /// <summary>Points every use of <paramref name="old"/> (nodes here and in subgraphs, graph outputs) at <paramref name="replacement"/>.</summary>
    public static void ReplaceAllUses(Value old, Value replacement)
    {
        foreach (var use in old.Uses.ToList()) use.Node.SetInput(use.Index, replacement);
        foreach (var g in old.Owner.AllGraphs())
            foreach (var o in g.Outputs)
                if (o.Value == old) o.Value = replacement;
    }

    /// <summary>Makes an unused output of a node absent (as if the source had not asked for it).</summary>
    public void DropOutput(Node node, int index)
    {
        if (node.Outputs[index] is not { } v) return;
        if (v.Uses.Count > 0) throw new InvalidOperationException($"cannot drop {v}: it still has uses");
        _byName.Remove(v.Name);
        node.Outputs[index] = null;
    }

    /// <summary>Removes a constant nothing uses.</summary>
    public void RemoveConstant(Value constant)
    {
        if (constant.Uses.Count > 0) throw new InvalidOperationException($"cannot remove {constant}: it still has uses");
        Constants.Remove(constant);
        _byName.Remove(constant.Name);
    }

    /// <summary>Every value defined in this graph (inputs, constants, node outputs), in definition order.</summary>
    public IEnumerable<Value> DefinedValues =>
        Inputs.Concat(Constants).Concat(Nodes.SelectMany(n => n.Outputs).OfType<Value>());

    /// <summary>This graph and every subgraph below it.</summary>
    public IEnumerable<Graph> AllGraphs()
    {
        yield return this;
        foreach (var n in Nodes)
            foreach (var sub in n.Subgraphs)
                foreach (var g in sub.AllGraphs())
                    yield return g;
    }
}
