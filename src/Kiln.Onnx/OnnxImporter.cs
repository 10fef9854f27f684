using System.Text;
using Google.Protobuf;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Ir.Inference;
using Kiln.Ir.Ops;
using Kiln.Onnx.Proto;

namespace Kiln.Onnx;

/// <summary>
/// Reads an ONNX model into Kiln's IR: opset adapters bring every node to its canonical form, Constant nodes and
/// initializers become constants (data wrapped or memory-mapped, never copied again), shape inference types every value.
/// Invalid input raises a <see cref="KilnException"/> naming the file and the problem.
/// </summary>
public sealed class OnnxImporter
{
    private readonly OpRegistry _registry;
    private readonly string? _file;
    private readonly Dictionary<string, long> _opsets = [];
    private readonly Dictionary<Value, IrType> _declared = [];
    private ExternalDataResolver? _external;
    private long _irVersion;

    private OnnxImporter(OpRegistry registry, string? file)
    {
        _registry = registry;
        _file = file;
    }

    /// <summary>Imports the model at <paramref name="path"/>. The returned model owns mapped external data files: dispose it.</summary>
    public static Model Import(string path, OpRegistry? registry = null)
    {
        var proto = ReadProto(path);
        var importer = new OnnxImporter(registry ?? OpRegistry.Default, path);
        try
        {
            return importer.Build(proto, Path.GetDirectoryName(Path.GetFullPath(path))!);
        }
        catch (KilnException e)
        {
            throw e.WithFile(path);
        }
    }

    /// <summary>Imports a model from its bytes (no external data).</summary>
    public static Model Import(byte[] bytes, string? displayName = null)
    {
        var proto = ParseOrFail(() => ModelProto.Parser.ParseFrom(bytes), displayName ?? "<memory>", bytes.Length);
        var importer = new OnnxImporter(OpRegistry.Default, displayName);
        try { return importer.Build(proto, null); }
        catch (KilnException e) { throw displayName is null ? e : e.WithFile(displayName); }
    }

    internal static ModelProto ReadProto(string path)
    {
        FileInfo info;
        try { info = new FileInfo(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new KilnException(DiagnosticCode.FileNotReadable, $"'{path}' is not a valid path: {e.Message}", path);
        }
        if (!info.Exists) throw new KilnException(DiagnosticCode.FileNotReadable, "file does not exist", path);
        if (info.Length == 0) throw new KilnException(DiagnosticCode.EmptyFile, "file is empty; an ONNX model is a serialized ModelProto", path);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            // Parse from the stream so only the parsed messages are held, not a second copy of the file.
            var input = new CodedInputStream(stream);
            return ParseOrFail(() => ModelProto.Parser.ParseFrom(input), path, info.Length);
        }
        catch (IOException e) { throw new KilnException(DiagnosticCode.FileNotReadable, $"cannot read file: {e.Message}", path); }
        catch (UnauthorizedAccessException e) { throw new KilnException(DiagnosticCode.FileNotReadable, $"cannot read file: {e.Message}", path); }
    }

    private static ModelProto ParseOrFail(Func<ModelProto> parse, string path, long length)
    {
        try
        {
            return parse();
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new KilnException(DiagnosticCode.MalformedProtobuf,
                $"not a valid ONNX model ({length} bytes): the protobuf data is truncated or corrupt ({e.Message.TrimEnd('.')})", path);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or OverflowException or DecoderFallbackException)
        {
            throw new KilnException(DiagnosticCode.MalformedProtobuf, $"not a valid ONNX model ({length} bytes): {e.Message}", path);
        }
    }

    private Model Build(ModelProto proto, string? directory)
    {
        if (proto.Graph is null)
            throw new KilnException(DiagnosticCode.InvalidModel, "the model has no graph (is this an ONNX file?)");
        if (proto.IrVersion <= 0)
            throw new KilnException(DiagnosticCode.InvalidModel, $"the model has no valid ir_version ({proto.IrVersion})");
        _irVersion = proto.IrVersion;
        foreach (var o in proto.OpsetImport) _opsets[OpRegistry.NormalizeDomain(o.Domain)] = o.Version;
        if (!_opsets.ContainsKey("")) _opsets[""] = proto.IrVersion < 3 ? 1 : OpRegistry.MaxOpset;
        var opset = _opsets[""];
        if (opset < OpRegistry.MinOpset || opset > OpRegistry.MaxOpset)
            throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedOpsetVersion,
                $"the model imports default-domain opset {opset}; Kiln supports opsets {OpRegistry.MinOpset} to {OpRegistry.MaxOpset}"));
        CheckOpsSupported(proto.Graph);

        var model = new Model(new Graph(proto.Graph.Name.Length > 0 ? proto.Graph.Name : "main"))
        {
            IrVersion = proto.IrVersion,
            ProducerName = proto.ProducerName,
            ProducerVersion = proto.ProducerVersion,
            Domain = proto.Domain,
            ModelVersion = proto.ModelVersion,
            SourcePath = _file,
        };
        foreach (var o in proto.OpsetImport) model.OpsetImports[o.Domain] = o.Version;
        foreach (var m in proto.MetadataProps) model.Metadata.Add(new(m.Key, m.Value));
        if (directory is not null) _external = new ExternalDataResolver(directory, model.Resources);
        try
        {
            BuildGraph(proto.Graph, model.Graph, topLevel: true);
            ShapeInference.Run(model.Graph, _registry, _declared);
            Verifier.Verify(model.Graph, _registry);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>Lists every op the registry lacks, with its nodes, in one diagnostic.</summary>
    private void CheckOpsSupported(GraphProto graph)
    {
        var missing = new SortedDictionary<string, List<string>>(StringComparer.Ordinal);
        void Walk(GraphProto g)
        {
            for (var i = 0; i < g.Node.Count; i++)
            {
                var n = g.Node[i];
                var domain = OpRegistry.NormalizeDomain(n.Domain);
                if (!(domain.Length == 0 && n.OpType == "Constant") && _registry.Find(domain, n.OpType) is null)
                {
                    var version = _opsets.TryGetValue(domain, out var v) ? v.ToString() : "not imported";
                    var key = $"{(domain.Length == 0 ? "" : domain + ":")}{n.OpType} (opset {version})";
                    if (!missing.TryGetValue(key, out var list)) missing[key] = list = [];
                    list.Add(n.Name.Length > 0 ? $"'{n.Name}'" : $"#{i}");
                }
                foreach (var a in n.Attribute)
                {
                    if (a.G is not null) Walk(a.G);
                    foreach (var sg in a.Graphs) Walk(sg);
                }
            }
        }
        Walk(graph);
        if (missing.Count == 0) return;
        var lines = missing.Select(kv => $"  {kv.Key}: {kv.Value.Count} node{(kv.Value.Count == 1 ? "" : "s")} ({string.Join(", ", kv.Value.Take(8))}{(kv.Value.Count > 8 ? ", …" : "")})");
        throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedOp,
            $"{missing.Count} unsupported op{(missing.Count == 1 ? "" : "s")}:\n" + string.Join("\n", lines)));
    }

    private void BuildGraph(GraphProto gp, Graph g, bool topLevel)
    {
        var initializers = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var t in gp.Initializer)
        {
            if (t.Name.Length == 0) throw new KilnException(DiagnosticCode.InvalidModel, $"graph '{gp.Name}' has an initializer without a name");
            if (!initializers.TryAdd(t.Name, t)) throw new KilnException(DiagnosticCode.DuplicateDefinition, $"initializer '{t.Name}' is defined twice");
        }
        if (gp.SparseInitializer.Count > 0)
            throw new KilnException(DiagnosticCode.InvalidModel, $"graph '{gp.Name}' has sparse initializers, which Kiln does not support");

        // Before IR version 4 every initializer was also listed as a graph input; those are constants, not inputs.
        var inputsAreOverridable = _irVersion >= 4;
        foreach (var vi in gp.Input)
        {
            if (initializers.TryGetValue(vi.Name, out var init) && (!inputsAreOverridable || !topLevel))
                continue;
            var declared = ConvertType(vi.Type, $"graph input '{vi.Name}'");
            var input = g.AddInput(vi.Name, declared);
            if (init is not null)
            {
                input.Data = OnnxTensors.Read(init, _external, $"initializer '{init.Name}'");
                CheckInitializerType(vi, input.Data, declared);
                initializers.Remove(vi.Name);
            }
        }
        foreach (var t in initializers.Values)
        {
            var data = OnnxTensors.Read(t, _external, $"initializer '{t.Name}'");
            var declaredInput = gp.Input.FirstOrDefault(i => i.Name == t.Name);
            if (declaredInput is not null) CheckInitializerType(declaredInput, data, ConvertType(declaredInput.Type, $"graph input '{t.Name}'"));
            g.AddConstant(t.Name, data);
        }

        var valueInfo = gp.ValueInfo.GroupBy(v => v.Name).ToDictionary(x => x.Key, x => x.First());
        var producedBy = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < gp.Node.Count; i++)
            foreach (var o in gp.Node[i].Output)
                if (o.Length > 0) producedBy.TryAdd(o, i);

        for (var i = 0; i < gp.Node.Count; i++)
        {
            var n = gp.Node[i];
            var domain = OpRegistry.NormalizeDomain(n.Domain);
            Diagnostic NodeDiag(DiagnosticCode code, string msg) => new(code, msg, _file, n.Name.Length > 0 ? n.Name : null, i, n.OpType);
            if (domain.Length == 0 && n.OpType == "Constant")
            {
                if (n.Output.Count != 1) throw new KilnException(NodeDiag(DiagnosticCode.ArityMismatch, "Constant must have exactly one output"));
                AddConstantNode(g, n, NodeDiag);
                continue;
            }
            var inputs = new List<Value?>();
            foreach (var name in n.Input)
            {
                if (name.Length == 0) { inputs.Add(null); continue; }
                var v = g.Lookup(name);
                if (v is null) throw OrderError(gp, i, name, producedBy);
                inputs.Add(v);
            }
            var attributes = new Dictionary<string, AttrValue>(StringComparer.Ordinal);
            foreach (var a in n.Attribute)
            {
                try { attributes[a.Name] = ConvertAttribute(a, g); }
                catch (KilnException e) when (e.Diagnostics[0].NodeIndex is null)
                {
                    throw new KilnException(NodeDiag(e.Diagnostics[0].Code, e.Diagnostics[0].Message));
                }
            }
            var version = (int)(_opsets.TryGetValue(domain, out var ov) ? ov : 1);
            var def = _registry.Find(domain, n.OpType)!;
            var outputNames = n.Output.Select(o => o.Length == 0 ? null : o).ToList();
            var ctx = new AdapterContext(g, version, n.OpType, inputs, attributes, n.Name.Length > 0 ? n.Name : null) { OutputNames = outputNames };
            try
            {
                def.Adapter?.Invoke(ctx);
                if (!ctx.Handled)
                {
                    while (outputNames.Count > 0 && outputNames[^1] is null) outputNames.RemoveAt(outputNames.Count - 1);
                    var node = g.AddNode(ctx.Op, domain, n.Name.Length > 0 ? n.Name : null, ctx.Inputs.ToArray(), outputNames, ctx.Attributes);
                    foreach (var o in node.Outputs)
                        if (o is not null && valueInfo.TryGetValue(o.Name, out var vi) && vi.Type is not null)
                            _declared[o] = ConvertType(vi.Type, $"value_info '{o.Name}'");
                }
            }
            catch (KilnException e) when (e.Diagnostics[0].NodeIndex is null)
            {
                throw new KilnException(NodeDiag(e.Diagnostics[0].Code, e.Diagnostics[0].Message));
            }
        }

        foreach (var vo in gp.Output)
        {
            var v = g.Lookup(vo.Name)
                ?? throw new KilnException(DiagnosticCode.UseBeforeDefinition, $"graph '{gp.Name}' output '{vo.Name}' is never defined");
            var declared = vo.Type is null ? v.Type : ConvertType(vo.Type, $"graph output '{vo.Name}'");
            g.AddOutput(v, declared, vo.Name);
        }
    }

    private static void CheckInitializerType(ValueInfoProto vi, TensorData data, IrType declared)
    {
        if (declared is not TensorType t) return;
        if (t.Elem != data.Elem || (t.Shape is not null && (t.Shape.Rank != data.Dims.Length ||
            t.Shape.Dims.Zip(data.Dims).Any(p => p.First.IsConstant && p.First.Value != p.Second))))
            throw new KilnException(DiagnosticCode.ShapeMismatch,
                $"graph input '{vi.Name}' is declared {KirPrinter.Type(t)} but its initializer is {KirPrinter.Type(data.Type)}");
    }

    private KilnException OrderError(GraphProto gp, int nodeIndex, string name, Dictionary<string, int> producedBy)
    {
        var n = gp.Node[nodeIndex];
        var nodeName = n.Name.Length > 0 ? n.Name : null;
        if (!producedBy.TryGetValue(name, out var producer))
            return new KilnException(new Diagnostic(DiagnosticCode.UseBeforeDefinition,
                $"input '{name}' is not defined anywhere (not a graph input, initializer or node output)", _file, nodeName, nodeIndex, n.OpType));
        var cycle = FindCycle(gp, producedBy);
        if (cycle is not null)
            return new KilnException(new Diagnostic(DiagnosticCode.GraphCycle,
                $"the graph has a cycle through nodes {string.Join(" → ", cycle.Select(i => gp.Node[i].Name.Length > 0 ? $"#{i} '{gp.Node[i].Name}'" : $"#{i}"))}", _file, nodeName, nodeIndex, n.OpType));
        return new KilnException(new Diagnostic(DiagnosticCode.UseBeforeDefinition,
            $"input '{name}' is used before it is defined (by node #{producer}); ONNX requires nodes in topological order", _file, nodeName, nodeIndex, n.OpType));
    }

    /// <summary>A cycle among the graph's nodes, as node indices, or null when the nodes can be ordered.</summary>
    private static List<int>? FindCycle(GraphProto gp, Dictionary<string, int> producedBy)
    {
        var state = new int[gp.Node.Count];
        var stack = new List<int>();
        List<int>? found = null;
        bool Visit(int i)
        {
            if (state[i] == 2) return false;
            if (state[i] == 1)
            {
                found = stack.Skip(stack.IndexOf(i)).Append(i).ToList();
                return true;
            }
            state[i] = 1;
            stack.Add(i);
            foreach (var input in gp.Node[i].Input)
                if (producedBy.TryGetValue(input, out var p) && Visit(p)) return true;
            stack.RemoveAt(stack.Count - 1);
            state[i] = 2;
            return false;
        }
        for (var i = 0; i < gp.Node.Count; i++)
            if (Visit(i)) return found;
        return null;
    }

    private void AddConstantNode(Graph g, NodeProto n, Func<DiagnosticCode, string, Diagnostic> diag)
    {
        if (n.Attribute.Count != 1) throw new KilnException(diag(DiagnosticCode.BadAttribute, "Constant must have exactly one value attribute"));
        var a = n.Attribute[0];
        var name = n.Output[0];
        TensorData data = a.Name switch
        {
            "value" => a.T is null ? throw new KilnException(diag(DiagnosticCode.BadAttribute, "Constant 'value' holds no tensor")) : OnnxTensors.Read(a.T, _external, $"Constant '{name}'"),
            "value_float" => TensorData.FromArray(DType.F32, [], new[] { a.F }),
            "value_floats" => TensorData.FromArray(DType.F32, [a.Floats.Count], a.Floats.ToArray()),
            "value_int" => TensorData.Int64([], a.I),
            "value_ints" => TensorData.Int64([a.Ints.Count], a.Ints.ToArray()),
            "value_string" => new StringTensorData([], [a.S.ToByteArray()]),
            "value_strings" => new StringTensorData([a.Strings.Count], a.Strings.Select(s => s.ToByteArray()).ToList()),
            "sparse_value" => throw new KilnException(diag(DiagnosticCode.BadAttribute, "Constant with a sparse_value is not supported")),
            _ => throw new KilnException(diag(DiagnosticCode.BadAttribute, $"Constant has unknown attribute '{a.Name}'")),
        };
        try { g.AddConstant(name, data); }
        catch (KilnException e) { throw new KilnException(diag(DiagnosticCode.DuplicateDefinition, e.Diagnostics[0].Message)); }
    }

    private AttrValue ConvertAttribute(AttributeProto a, Graph owner)
    {
        if (a.RefAttrName.Length > 0)
            throw new KilnException(DiagnosticCode.BadAttribute, $"attribute '{a.Name}' refers to a function attribute; functions are not supported");
        var type = a.Type;
        if (type == AttributeProto.Types.AttributeType.Undefined) type = InferAttributeType(a);
        return type switch
        {
            AttributeProto.Types.AttributeType.Int => new IntAttr(a.I),
            AttributeProto.Types.AttributeType.Float => new FloatAttr(a.F),
            AttributeProto.Types.AttributeType.String => new StringAttr(a.S.ToStringUtf8()),
            AttributeProto.Types.AttributeType.Ints => new IntsAttr(a.Ints.ToArray()),
            AttributeProto.Types.AttributeType.Floats => new FloatsAttr(a.Floats.ToArray()),
            AttributeProto.Types.AttributeType.Strings => new StringsAttr(a.Strings.Select(s => s.ToStringUtf8()).ToArray()),
            AttributeProto.Types.AttributeType.Tensor => new TensorAttr(OnnxTensors.Read(a.T ?? new TensorProto(), _external, $"attribute '{a.Name}'")),
            AttributeProto.Types.AttributeType.Tensors => new TensorsAttr(a.Tensors.Select(t => OnnxTensors.Read(t, _external, $"attribute '{a.Name}'")).ToArray()),
            AttributeProto.Types.AttributeType.Graph => new GraphAttr(Subgraph(a.G ?? new GraphProto(), owner)),
            AttributeProto.Types.AttributeType.Graphs => new GraphsAttr(a.Graphs.Select(x => Subgraph(x, owner)).ToArray()),
            AttributeProto.Types.AttributeType.TypeProto => new TypeAttr(ConvertType(a.Tp, $"attribute '{a.Name}'")),
            AttributeProto.Types.AttributeType.TypeProtos => new TypesAttr(a.TypeProtos.Select(t => ConvertType(t, $"attribute '{a.Name}'")).ToArray()),
            _ => throw new KilnException(DiagnosticCode.BadAttribute, $"attribute '{a.Name}' has unsupported type {a.Type}"),
        };
    }

    /// <summary>Very old files leave the attribute type unset; the filled field tells it.</summary>
    private static AttributeProto.Types.AttributeType InferAttributeType(AttributeProto a)
    {
        if (a.Ints.Count > 0) return AttributeProto.Types.AttributeType.Ints;
        if (a.Floats.Count > 0) return AttributeProto.Types.AttributeType.Floats;
        if (a.Strings.Count > 0) return AttributeProto.Types.AttributeType.Strings;
        if (a.T is not null) return AttributeProto.Types.AttributeType.Tensor;
        if (a.G is not null) return AttributeProto.Types.AttributeType.Graph;
        if (!a.S.IsEmpty) return AttributeProto.Types.AttributeType.String;
        if (a.F != 0) return AttributeProto.Types.AttributeType.Float;
        return AttributeProto.Types.AttributeType.Int;
    }

    private Graph Subgraph(GraphProto gp, Graph parent)
    {
        var g = new Graph(gp.Name.Length > 0 ? gp.Name : "body", parent);
        BuildGraph(gp, g, topLevel: false);
        return g;
    }

    internal static IrType ConvertType(TypeProto? t, string what)
    {
        if (t is null) return IrType.Unknown;
        switch (t.ValueCase)
        {
            case TypeProto.ValueOneofCase.TensorType:
                if (t.TensorType.ElemType == 0) return IrType.Unknown;
                var elem = OnnxElementCodes.FromCode(t.TensorType.ElemType)
                    ?? throw new KilnException(DiagnosticCode.UnsupportedElementType, $"{what} has element type {OnnxElementCodes.CodeName(t.TensorType.ElemType)}, which Kiln does not support");
                return new TensorType(elem, ConvertShape(t.TensorType.Shape));
            case TypeProto.ValueOneofCase.SequenceType:
                return new SequenceType(ConvertType(t.SequenceType.ElemType, what));
            case TypeProto.ValueOneofCase.OptionalType:
                return new OptionalType(ConvertType(t.OptionalType.ElemType, what));
            case TypeProto.ValueOneofCase.None:
                return IrType.Unknown;
            default:
                throw new KilnException(DiagnosticCode.UnsupportedElementType, $"{what} has a {t.ValueCase} type, which Kiln does not support");
        }
    }

    private static Shape? ConvertShape(TensorShapeProto? s) =>
        s is null ? null : new Shape(s.Dim.Select(d => d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => d.DimValue >= 0 ? Dim.Const(d.DimValue) : Dim.Unknown,
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam when d.DimParam.Length > 0 => Dim.Symbol(d.DimParam),
            _ => Dim.Unknown,
        }));
}
