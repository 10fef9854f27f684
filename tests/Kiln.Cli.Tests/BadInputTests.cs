using Google.Protobuf;
using Kiln.Onnx.Proto;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary>Bad models give exit code 1 and one clear message naming the file and the problem — never a stack trace.</summary>
public sealed class BadInputTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("kiln-bad");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir.FullName, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static ValueInfoProto Info(string name, int elem, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elem, Shape = shape } } };
    }

    private static NodeProto Node(string op, string name, string[] inputs, string[] outputs)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        return n;
    }

    private static ModelProto Model(GraphProto g)
    {
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return m;
    }

    private static TensorProto Floats(string name, long[] dims, int count)
    {
        var t = new TensorProto { Name = name, DataType = 1 };
        t.Dims.AddRange(dims);
        t.RawData = ByteString.CopyFrom(new byte[count * 4]);
        return t;
    }

    /// <summary>A one-node model y = MatMul(x, w) with w of the given shape and data.</summary>
    private static ModelProto MatMulModel(TensorProto w, long[] xDims)
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", 1, xDims));
        g.Initializer.Add(w);
        g.Node.Add(Node("MatMul", "mm", ["x", "w"], ["y"]));
        g.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        return Model(g);
    }

    private static void AssertBadInput(CliRunner.Result r, string path, params string[] expected)
    {
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(path, r.StdErr);
        foreach (var e in expected) Assert.Contains(e, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr); // no stack trace
        Assert.DoesNotContain("Exception", r.StdErr);
    }

    [Fact]
    public void TruncatedModel()
    {
        var bytes = File.ReadAllBytes(Fixtures.Model("stories260k/model.onnx"));
        var path = Write("truncated.onnx", bytes[..(bytes.Length / 2)]);
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0003", "truncated or corrupt");
    }

    [Fact]
    public void RandomBytes()
    {
        var bytes = new byte[4096];
        new Random(1234).NextBytes(bytes);
        var path = Write("random.onnx", bytes);
        var r = CliRunner.Run("inspect", path);
        AssertBadInput(r, path, "not a valid ONNX model");
    }

    [Fact]
    public void EmptyFile()
    {
        var path = Write("empty.onnx", []);
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0002", "file is empty");
    }

    [Fact]
    public void MissingFile()
    {
        var path = Path.Combine(_dir.FullName, "nope.onnx");
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0001", "does not exist");
    }

    [Fact]
    public void UnknownOpsAreAllListed()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", 1, 2));
        g.Node.Add(Node("FrobnicateA", "first", ["x"], ["a"]));
        g.Node.Add(Node("Relu", "relu", ["a"], ["b"]));
        g.Node.Add(Node("FrobnicateB", "second", ["b"], ["c"]));
        g.Node.Add(Node("FrobnicateA", "third", ["c"], ["y"]));
        g.Output.Add(Info("y", 1, 2));
        var path = Write("unknown.onnx", Model(g).ToByteArray());
        var r = CliRunner.Run("dump", path);
        AssertBadInput(r, path, "KILN0005", "2 unsupported ops", "FrobnicateA (opset 17): 2 nodes ('first', 'third')", "FrobnicateB (opset 17): 1 node ('second')");
        var inspect = CliRunner.Run("inspect", path);
        Assert.Equal(0, inspect.ExitCode);
        Assert.Contains("unsupported ops: FrobnicateA, FrobnicateB", inspect.StdOut);
    }

    private ModelProto ExternalModel(string location)
    {
        var w = new TensorProto { Name = "w", DataType = 1, DataLocation = TensorProto.Types.DataLocation.External };
        w.Dims.AddRange([2, 2]);
        w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        w.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "0" });
        w.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = "16" });
        return MatMulModel(w, [1, 2]);
    }

    [Fact]
    public void ExternalDataFileMissing()
    {
        var path = Write("ext/model.onnx", ExternalModel("weights.bin").ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0006", "'weights.bin' does not exist");
    }

    [Fact]
    public void ExternalDataPresentIsMapped()
    {
        var path = Write("ext-ok/model.onnx", ExternalModel("weights.bin").ToByteArray());
        Write("ext-ok/weights.bin", new byte[16]);
        var r = CliRunner.Run("dump", path);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("const @w: f32[2, 2] = [0.0, 0.0, 0.0, 0.0]", r.StdOut);
        Assert.Contains("%y: f32[1, 2] = MatMul(%x, @w)", r.StdOut);
    }

    [Theory]
    [InlineData("../../etc/passwd", "points outside the model's folder")]
    [InlineData("/etc/passwd", "is an absolute path")]
    public void ExternalDataOutsideModelFolderIsRefused(string location, string message)
    {
        var path = Write("escape/model.onnx", ExternalModel(location).ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0007", message);
    }

    [Fact]
    public void TensorSizeDisagreesWithData()
    {
        var path = Write("size.onnx", MatMulModel(Floats("w", [2, 3], 5), [1, 2]).ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0008", "initializer 'w' declares [2, 3] f32 (24 bytes) but holds 20 bytes");
    }

    [Fact]
    public void InitializerShapeDisagreesWithUse()
    {
        var path = Write("shape.onnx", MatMulModel(Floats("w", [3, 5], 15), [1, 4]).ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0012", "node #0 'mm' (MatMul)", "inner dimensions differ: [1, 4] × [3, 5]");
    }

    [Fact]
    public void GraphWithCycle()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", 1, 2));
        g.Node.Add(Node("Add", "first", ["x", "b"], ["a"]));
        g.Node.Add(Node("Relu", "second", ["a"], ["b"]));
        g.Output.Add(Info("b", 1, 2));
        var path = Write("cycle.onnx", Model(g).ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0010", "cycle through nodes", "'first'", "'second'");
    }

    [Fact]
    public void UseBeforeDefinition()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", 1, 2));
        g.Node.Add(Node("Relu", "late", ["a"], ["y"]));
        g.Node.Add(Node("Relu", "early", ["x"], ["a"]));
        g.Output.Add(Info("y", 1, 2));
        var path = Write("order.onnx", Model(g).ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0009", "node #0 'late' (Relu)", "input 'a' is used before it is defined (by node #1)");
    }

    [Fact]
    public void UndefinedInput()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Info("x", 1, 2));
        g.Node.Add(Node("Relu", "r", ["ghost"], ["y"]));
        g.Output.Add(Info("y", 1, 2));
        var path = Write("ghost.onnx", Model(g).ToByteArray());
        AssertBadInput(CliRunner.Run("dump", path), path, "KILN0009", "input 'ghost' is not defined anywhere");
    }
}
