using Google.Protobuf;
using Kiln.Ir;
using Kiln.Onnx.Proto;
using Kiln.TestSupport;

namespace Kiln.Onnx.Tests;

/// <summary>Hand-built models for opset changes the Debian suite (opset ≤ 17) does not reach: adapters give one canonical form.</summary>
public sealed class OpsetAdapterTests
{
    private static ValueInfoProto Info(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } };
    }

    private static Model Build(int opset, NodeProto node, long[] xDims, IEnumerable<TensorProto>? inits = null, params string[] outputs)
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", xDims));
        g.Node.Add(node);
        if (inits is not null) g.Initializer.AddRange(inits);
        foreach (var o in outputs) g.Output.Add(new ValueInfoProto { Name = o, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return OnnxImporter.Import(m.ToByteArray());
    }

    private static NodeProto Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attrs)
    {
        var n = new NodeProto { OpType = op, Name = "n" };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        n.Attribute.AddRange(attrs);
        return n;
    }

    private static AttributeProto Ints(string name, params long[] v)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(v);
        return a;
    }

    private static TensorProto I64(string name, params long[] v)
    {
        var t = new TensorProto { Name = name, DataType = 7 };
        t.Dims.Add(v.Length);
        t.Int64Data.AddRange(v);
        return t;
    }

    private static string Line(Model m) => KirPrinter.Print(m.Graph).Split('\n').Single(l => l.Contains("= Reduce") || l.Contains("= Split") || l.Contains("= GridSample"));

    [Fact]
    public void ReduceMeanAxesAttributeBeforeOpset18BecomesInput()
    {
        using var old = Build(13, Node("ReduceMean", ["x"], ["y"], Ints("axes", 1)), [2, 3, 4], null, "y");
        using var now = Build(18, Node("ReduceMean", ["x", "axes"], ["y"]), [2, 3, 4], [I64("axes", 1)], "y");
        Assert.Equal("f32[2, 1, 4]", KirPrinter.Type(old.Graph.Lookup("y")!.Type));
        Assert.Equal("f32[2, 1, 4]", KirPrinter.Type(now.Graph.Lookup("y")!.Type));
        Assert.Matches(@"ReduceMean\(%x, @[^)]*\)", Line(old));
        Assert.Equal(2, old.Graph.Nodes[0].Inputs.Count);
    }

    [Fact]
    public void SplitEvenBeforeOpset18GetsNumOutputs()
    {
        using var old = Build(13, Node("Split", ["x"], ["a", "b", "c"]), [6, 2], null, "a", "b", "c");
        using var now = Build(18, Node("Split", ["x"], ["a", "b", "c"], new AttributeProto { Name = "num_outputs", Type = AttributeProto.Types.AttributeType.Int, I = 3 }), [6, 2], null, "a", "b", "c");
        Assert.Equal(Line(old), Line(now));
        Assert.Contains("{num_outputs=3}", Line(old));
        Assert.Equal("f32[2, 2]", KirPrinter.Type(old.Graph.Lookup("c")!.Type));
    }

    [Fact]
    public void GridSampleModesRenamedInOpset20()
    {
        var mode = new AttributeProto { Name = "mode", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8("bilinear") };
        var node = Node("GridSample", ["x", "grid"], ["y"], mode);
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", 1, 1, 4, 4));
        g.Input.Add(Info("grid", 1, 3, 3, 2));
        g.Node.Add(node);
        g.Output.Add(Info("y", 1, 1, 3, 3));
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 16 });
        using var model = OnnxImporter.Import(m.ToByteArray());
        Assert.Contains("mode=\"linear\"", Line(model));
    }

    [Fact]
    public void OpsetAbove21IsRefusedClearly()
    {
        var e = Assert.Throws<Kiln.Ir.Diagnostics.KilnException>(() => Build(22, Node("Relu", ["x"], ["y"]), [2], null, "y"));
        Assert.Contains("KILN0019", e.Message);
        Assert.Contains("opset 22", e.Message);
    }
}
