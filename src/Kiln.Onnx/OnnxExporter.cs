using Google.Protobuf;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Ir.Ops;
using Kiln.Onnx.Proto;

namespace Kiln.Onnx;

/// <summary>
/// Writes an IR model as ONNX (default-domain opset <see cref="OpRegistry.CanonicalOpset"/>, Kiln's canonical op
/// forms) so ONNX Runtime can check any graph. Weights over <see cref="ExternalThreshold"/> bytes in total go to a
/// data file beside the model, as ONNX requires for models over 2 GB.
/// </summary>
public static class OnnxExporter
{
    /// <summary>Total weight bytes above which large tensors are written as external data.</summary>
    public const long ExternalThreshold = 1L << 30;

    public static void Export(Model model, string path)
    {
        var dataPath = path + ".data";
        var total = KirPrinter.ReferencedWeights(model.Graph).Sum(t => t.ByteLength);
        FileStream? data = null;
        try
        {
            Func<TensorData, TensorProto, bool>? external = null;
            if (total > ExternalThreshold)
            {
                data = new FileStream(dataPath, FileMode.Create, FileAccess.Write);
                var location = Path.GetFileName(dataPath);
                external = (t, proto) =>
                {
                    if (t.ByteLength < 1024) return false;
                    // 64-byte alignment keeps every tensor mappable and vector-aligned.
                    var pad = (64 - data.Position % 64) % 64;
                    data.Write(new byte[pad]);
                    var offset = data.Position;
                    data.Write(t.Bytes);
                    proto.DataLocation = TensorProto.Types.DataLocation.External;
                    proto.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
                    proto.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
                    proto.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = t.ByteLength.ToString() });
                    return true;
                };
            }
            var proto = ToProto(model, external);
            using var output = new FileStream(path, FileMode.Create, FileAccess.Write);
            proto.WriteTo(output);
        }
        finally
        {
            data?.Dispose();
        }
    }

    public static byte[] ExportToBytes(Model model) => ToProto(model, null).ToByteArray();

    internal static ModelProto ToProto(Model model, Func<TensorData, TensorProto, bool>? external)
    {
        var proto = new ModelProto
        {
            IrVersion = Math.Max(model.IrVersion, 10),
            ProducerName = "kiln",
            ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "",
            Domain = model.Domain,
            ModelVersion = model.ModelVersion,
            Graph = GraphToProto(model.Graph, external),
        };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = OpRegistry.CanonicalOpset });
        foreach (var (domain, version) in model.OpsetImports)
            if (OpRegistry.NormalizeDomain(domain).Length > 0)
                proto.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        foreach (var (k, v) in model.Metadata) proto.MetadataProps.Add(new StringStringEntryProto { Key = k, Value = v });
        return proto;
    }

    private static GraphProto GraphToProto(Graph g, Func<TensorData, TensorProto, bool>? external)
    {
        var gp = new GraphProto { Name = g.Name };
        foreach (var input in g.Inputs)
        {
            gp.Input.Add(new ValueInfoProto { Name = input.Name, Type = TypeToProto(input.Type) });
            if (input.Data is not null) gp.Initializer.Add(OnnxTensors.Write(input.Name, input.Data, external));
        }
        foreach (var c in g.Constants) gp.Initializer.Add(OnnxTensors.Write(c.Name, c.Data!, external));
        foreach (var n in g.Nodes)
        {
            var np = new NodeProto { OpType = n.Op, Domain = n.Domain, Name = n.Name ?? "" };
            np.Input.AddRange(n.Inputs.Select(v => v?.Name ?? ""));
            var outputs = n.Outputs.Select(v => v?.Name ?? "").ToList();
            while (outputs.Count > 0 && outputs[^1].Length == 0) outputs.RemoveAt(outputs.Count - 1);
            np.Output.AddRange(outputs);
            foreach (var (name, value) in n.Attributes) np.Attribute.Add(AttributeToProto(name, value, external));
            gp.Node.Add(np);
        }
        foreach (var o in g.Outputs)
        {
            if (o.Name != o.Value.Name)
            {
                var id = new NodeProto { OpType = "Identity", Name = "output." + o.Name };
                id.Input.Add(o.Value.Name);
                id.Output.Add(o.Name);
                gp.Node.Add(id);
            }
            gp.Output.Add(new ValueInfoProto { Name = o.Name, Type = TypeToProto(o.DeclaredType) });
        }
        return gp;
    }

    private static AttributeProto AttributeToProto(string name, AttrValue value, Func<TensorData, TensorProto, bool>? external)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case IntAttr i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i.Value; break;
            case FloatAttr f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f.Value; break;
            case StringAttr s: a.Type = AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s.Value); break;
            case IntsAttr i: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(i.Value); break;
            case FloatsAttr f: a.Type = AttributeProto.Types.AttributeType.Floats; a.Floats.AddRange(f.Value); break;
            case StringsAttr s: a.Type = AttributeProto.Types.AttributeType.Strings; a.Strings.AddRange(s.Value.Select(ByteString.CopyFromUtf8)); break;
            case TensorAttr t: a.Type = AttributeProto.Types.AttributeType.Tensor; a.T = OnnxTensors.Write("", t.Value); break;
            case TensorsAttr ts: a.Type = AttributeProto.Types.AttributeType.Tensors; a.Tensors.AddRange(ts.Value.Select(t => OnnxTensors.Write("", t))); break;
            case GraphAttr g: a.Type = AttributeProto.Types.AttributeType.Graph; a.G = GraphToProto(g.Value, external); break;
            case GraphsAttr gs: a.Type = AttributeProto.Types.AttributeType.Graphs; a.Graphs.AddRange(gs.Value.Select(g => GraphToProto(g, external))); break;
            case TypeAttr t: a.Type = AttributeProto.Types.AttributeType.TypeProto; a.Tp = TypeToProto(t.Value); break;
            case TypesAttr ts: a.Type = AttributeProto.Types.AttributeType.TypeProtos; a.TypeProtos.AddRange(ts.Value.Select(TypeToProto)); break;
            default: throw new KilnException(DiagnosticCode.ExportUnsupported, $"attribute '{name}' of kind {value.Kind} cannot be exported");
        }
        return a;
    }

    internal static TypeProto TypeToProto(IrType t)
    {
        switch (t)
        {
            case TensorType tt:
                var tensor = new TypeProto.Types.Tensor { ElemType = OnnxElementCodes.ToCode(tt.Elem) };
                if (tt.Shape is not null)
                {
                    tensor.Shape = new TensorShapeProto();
                    foreach (var d in tt.Shape.Dims)
                    {
                        var dim = new TensorShapeProto.Types.Dimension();
                        if (d.Value is { } v) dim.DimValue = v;
                        else if (!d.IsUnknown) dim.DimParam = d.ToString();
                        tensor.Shape.Dim.Add(dim);
                    }
                }
                return new TypeProto { TensorType = tensor };
            case SequenceType s: return new TypeProto { SequenceType = new TypeProto.Types.Sequence { ElemType = TypeToProto(s.Element) } };
            case OptionalType o: return new TypeProto { OptionalType = new TypeProto.Types.Optional { ElemType = TypeToProto(o.Element) } };
            default: return new TypeProto();
        }
    }
}
