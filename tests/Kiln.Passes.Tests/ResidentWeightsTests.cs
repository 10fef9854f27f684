using Kiln.Ir;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Passes.Tests;

/// <summary>
/// A pass that reads a mapped weight in full lets its pages go afterwards, so compiling a model larger than memory
/// does not keep every page it touched resident (the 1B preset's compile: 6.1 → 2.0 GiB peak).
/// </summary>
public sealed class ResidentWeightsTests
{
    [Fact]
    public void Released_pages_read_back_the_same_bytes()
    {
        if (!ResidentMemory.Measurable) return;
        var path = Path.GetTempFileName();
        try
        {
            var bytes = new byte[8 << 20];
            new Random(7).NextBytes(bytes);
            File.WriteAllBytes(path, bytes);
            using var file = new Runtime.MappedFile(path);
            Assert.True(file.Span(0, bytes.Length).SequenceEqual(bytes));
            Assert.True(ResidentMemory.Of(file) >= bytes.Length);
            file.ReleaseResident(4096 * 3 + 17, 1 << 20); // a range that starts inside a page
            // At least the range goes (the kernel may drop a whole large folio around it), not the rest of the file.
            Assert.InRange(ResidentMemory.Of(file), 1, bytes.Length - (1 << 20));
            file.ReleaseResident(0, file.Length);
            Assert.Equal(0, ResidentMemory.Of(file));
            Assert.True(file.Span(0, bytes.Length).SequenceEqual(bytes));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("cse")]
    [InlineData("quantize{bits=4}")]
    public void A_pass_that_reads_mapped_weights_leaves_them_unresident(string pass)
    {
        if (!ResidentMemory.Measurable) return;
        var dir = Path.Combine(Path.GetTempPath(), "kiln-resident-test-" + Guid.NewGuid().ToString("N"));
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        var spill = new WeightSpill(dir, minimumBytes: 1);
        model.Resources.Add(spill);
        // The float weights moved into mapped files, as an ONNX model's external data is, and read once.
        var matrices = model.Graph.Constants.Where(c => c.Data is { Elem: DType.F32, Dims.Length: 2 } d && d.ByteLength >= 16384).ToList();
        foreach (var c in matrices) c.Data = spill.Keep(c.Data!);
        // cse hashes the weights that share a type and shape with another; quantize reads every matrix it replaces.
        if (pass == "cse") matrices = matrices.GroupBy(c => c.Data!.Type.ToString()).Where(g => g.Count() > 1).SelectMany(g => g).ToList();
        var mapped = matrices.Select(c => (Name: c.Name, File: ((MappedTensorData)c.Data!).File)).ToList();
        foreach (var (_, f) in mapped) _ = f.Span(0, f.Length).IndexOf((byte)1);
        Assert.All(mapped, m => Assert.True(ResidentMemory.Of(m.File) > 0, m.Name));
        PassManager.Run(model, PassPipeline.Parse(pass));
        Assert.True(mapped.Count >= 10);
        Assert.All(mapped, m => Assert.True(ResidentMemory.Of(m.File) == 0, $"{m.Name}: {ResidentMemory.Of(m.File)} bytes still resident after {pass}"));
    }
}
