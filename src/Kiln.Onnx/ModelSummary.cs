using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Ir.Ops;
using Kiln.Onnx.Proto;

namespace Kiln.Onnx;

/// <summary>What <c>kiln inspect</c> reports about an ONNX file, read straight from the protobuf (so it works even when import would fail).</summary>
public sealed record ModelSummary(
    string File,
    long FileBytes,
    long IrVersion,
    string Producer,
    IReadOnlyDictionary<string, long> Opsets,
    IReadOnlyList<IoEntry> Inputs,
    IReadOnlyList<IoEntry> Outputs,
    int NodeCount,
    IReadOnlyDictionary<string, int> OpHistogram,
    long InitializerParameters,
    int InitializerCount,
    long ConstantNodeParameters,
    int ConstantNodeCount,
    IReadOnlyDictionary<string, long> BytesByElementType,
    IReadOnlyList<string> UnsupportedOps,
    long ExternalDataBytes)
{
    /// <summary>The model file and the external data files it names (those that exist), in bytes.</summary>
    public long TotalBytes => FileBytes + ExternalDataBytes;

    public static ModelSummary Read(string path, OpRegistry? registry = null)
    {
        registry ??= OpRegistry.Default;
        var proto = OnnxImporter.ReadProto(path);
        if (proto.Graph is null) throw new KilnException(DiagnosticCode.InvalidModel, "the model has no graph (is this an ONNX file?)", path);
        var g = proto.Graph;
        var histogram = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var bytes = new SortedDictionary<string, long>(StringComparer.Ordinal);
        var unsupported = new SortedSet<string>(StringComparer.Ordinal);
        long constParams = 0;
        var constCount = 0;
        var nodeCount = 0;
        void AddBytes(TensorProto t)
        {
            var name = OnnxElementCodes.FromCode(t.DataType)?.Name() ?? OnnxElementCodes.CodeName(t.DataType);
            var count = t.Dims.Aggregate(1L, (a, b) => a * b);
            var size = OnnxElementCodes.FromCode(t.DataType) is { } e && e != DType.String ? e.ByteCount(count) : t.StringData.Sum(s => (long)s.Length);
            bytes[name] = bytes.GetValueOrDefault(name) + size;
        }
        void Walk(GraphProto graph)
        {
            foreach (var n in graph.Node)
            {
                nodeCount++;
                var domain = OpRegistry.NormalizeDomain(n.Domain);
                var key = domain.Length == 0 ? n.OpType : $"{domain}:{n.OpType}";
                histogram[key] = histogram.GetValueOrDefault(key) + 1;
                if (domain.Length == 0 && n.OpType == "Constant")
                {
                    constCount++;
                    foreach (var a in n.Attribute)
                    {
                        if (a.T is not null) { constParams += a.T.Dims.Aggregate(1L, (x, y) => x * y); AddBytes(a.T); }
                        constParams += a.Floats.Count + a.Ints.Count + a.Strings.Count;
                        if (a.Name is "value_float" or "value_int" or "value_string") constParams += 1;
                    }
                }
                else if (registry.Find(domain, n.OpType) is null) unsupported.Add(key);
                foreach (var a in n.Attribute)
                {
                    if (a.G is not null) Walk(a.G);
                    foreach (var sg in a.Graphs) Walk(sg);
                }
            }
        }
        Walk(g);
        foreach (var t in g.Initializer) AddBytes(t);
        var initNames = g.Initializer.Select(t => t.Name).ToHashSet();
        IoEntry Io(ValueInfoProto v) => new(v.Name, KirPrinter.Type(SafeType(v)));
        return new ModelSummary(
            path, new FileInfo(path).Length, proto.IrVersion, (proto.ProducerName + " " + proto.ProducerVersion).Trim(),
            proto.OpsetImport.ToDictionary(o => o.Domain.Length == 0 ? "ai.onnx" : o.Domain, o => o.Version),
            g.Input.Where(i => !initNames.Contains(i.Name)).Select(Io).ToList(),
            g.Output.Select(Io).ToList(),
            nodeCount, histogram,
            g.Initializer.Sum(t => t.Dims.Aggregate(1L, (a, b) => a * b)), g.Initializer.Count,
            constParams, constCount, bytes, unsupported.ToList(), ExternalBytes(g, path));
    }

    /// <summary>Sizes of the distinct external data files the initializers name (beside the model), where they exist.</summary>
    private static long ExternalBytes(GraphProto g, string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path)) ?? "";
        return g.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External)
            .SelectMany(t => t.ExternalData.Where(e => e.Key == "location").Select(e => e.Value))
            .Distinct(StringComparer.Ordinal)
            .Select(location => new FileInfo(Path.Combine(dir, location)))
            .Where(f => f.Exists).Sum(f => f.Length);
    }

    private static IrType SafeType(ValueInfoProto v)
    {
        try { return OnnxImporter.ConvertType(v.Type, v.Name); }
        catch (KilnException) { return IrType.Unknown; }
    }
}

public sealed record IoEntry(string Name, string Type);
