using System.Text.Json;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

public sealed class CommandTests
{
    [Fact]
    public void InspectStories260kCountsInitializerParameters()
    {
        var r = CliRunner.Run("inspect", Fixtures.Model("stories260k/model.onnx"));
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("parameters in initializers: 260,032 (47 tensors)", r.StdOut);
        Assert.Contains("input_ids: i64[batch, seq]", r.StdOut);
        Assert.Contains("unsupported ops: none", r.StdOut);
        Assert.Contains("import peak memory:", r.StdOut);
    }

    [Fact]
    public void InspectCountsExternalDataInTheSizeTheImportIsMeasuredAgainst()
    {
        // stories260k with its initializers moved to external data, as large exports are written.
        var dir = Directory.CreateTempSubdirectory("kiln-inspect-").FullName;
        try
        {
            var proto = Kiln.Onnx.OnnxImporter.ReadProto(Fixtures.Model("stories260k/model.onnx"));
            using (var data = File.Create(Path.Combine(dir, "model.onnx.data")))
                foreach (var t in proto.Graph.Initializer.Where(t => t.RawData.Length >= 1024))
                {
                    t.ExternalData.Add(new Kiln.Onnx.Proto.StringStringEntryProto { Key = "location", Value = "model.onnx.data" });
                    t.ExternalData.Add(new Kiln.Onnx.Proto.StringStringEntryProto { Key = "offset", Value = data.Position.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    t.ExternalData.Add(new Kiln.Onnx.Proto.StringStringEntryProto { Key = "length", Value = t.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    data.Write(t.RawData.Span);
                    t.RawData = Google.Protobuf.ByteString.Empty;
                    t.DataLocation = Kiln.Onnx.Proto.TensorProto.Types.DataLocation.External;
                }
            var model = Path.Combine(dir, "model.onnx");
            File.WriteAllBytes(model, Google.Protobuf.MessageExtensions.ToByteArray(proto));
            var external = new FileInfo(Path.Combine(dir, "model.onnx.data")).Length;
            var r = CliRunner.Run("inspect", "--json", model);
            Assert.True(r.ExitCode == 0, r.StdErr);
            using var doc = JsonDocument.Parse(r.StdOut);
            Assert.Equal(external, doc.RootElement.GetProperty("external_data_bytes").GetInt64());
            var peak = doc.RootElement.GetProperty("import_peak_memory_bytes").GetInt64();
            var total = external + new FileInfo(model).Length;
            Assert.Equal(Math.Round((double)peak / total, 3), doc.RootElement.GetProperty("import_peak_to_file_size").GetDouble());
            Assert.Contains("external data", CliRunner.Run("inspect", model).StdOut);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void DumpPlanPrintsWhereEachValueOfTheGeneratedCodeLives()
    {
        var r = CliRunner.Run("dump", Fixtures.Model("stories260k/model.onnx"), "--plan");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Matches(@"^run: \d+ nodes, \d+ values in \d+ arena slots, \d+ views, 5 elementwise chains", r.StdOut);
        Assert.Matches(@"(?m)^step: \d+ nodes", r.StdOut);
        Assert.Contains("= kiln:GroupQueryAttention", r.StdOut);
        Assert.Contains("the KV cache, in place = Concat", r.StdOut);
        Assert.Contains("chain 0: SiLU·Mul → one loop", r.StdOut);
    }

    [Fact]
    public void InspectPaddleOcrCountsConstantNodesSeparately()
    {
        var r = CliRunner.Run("inspect", "--json", Fixtures.Model("paddleocr/cls/model.onnx"));
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.StdOut);
        Assert.Equal(0, doc.RootElement.GetProperty("initializer_parameters").GetInt64());
        Assert.True(doc.RootElement.GetProperty("constant_node_parameters").GetInt64() > 100_000);
        Assert.Equal(250, doc.RootElement.GetProperty("op_histogram").GetProperty("Constant").GetInt32());
    }

    [Fact]
    public void DumpParseExportRoundTrip()
    {
        var dir = Directory.CreateTempSubdirectory("kiln-cli");
        try
        {
            var kir = Path.Combine(dir.FullName, "m.kir");
            var kir2 = Path.Combine(dir.FullName, "m2.kir");
            var onnx = Path.Combine(dir.FullName, "m.onnx");
            Assert.Equal(0, CliRunner.Run("dump", Fixtures.Model("llama-tiny-random/model.onnx"), "-o", kir).ExitCode);
            Assert.True(File.Exists(kir + ".weights"));
            Assert.Equal(0, CliRunner.Run("dump", kir, "-o", kir2).ExitCode);
            Assert.Equal(File.ReadAllText(kir), File.ReadAllText(kir2));
            Assert.Equal(0, CliRunner.Run("export", kir, "-o", onnx).ExitCode);
            var again = CliRunner.Run("dump", onnx);
            Assert.Equal(0, again.ExitCode);
            Assert.Contains("f32[batch, 2, past_seq + seq, 16]", again.StdOut);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void KirSyntaxErrorIsBadInput()
    {
        var dir = Directory.CreateTempSubdirectory("kiln-cli");
        try
        {
            var kir = Path.Combine(dir.FullName, "bad.kir");
            File.WriteAllText(kir, "model ir_version=8\ngraph @g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Relu(%nope)\n}\n");
            var r = CliRunner.Run("dump", kir);
            Assert.Equal(1, r.ExitCode);
            Assert.Contains("KILN0016", r.StdErr);
            Assert.Contains("line 3", r.StdErr);
            Assert.Contains("%nope is used before it is defined", r.StdErr);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
