using Kiln.Ir;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Passes.Tests;

/// <summary>With a spill, the weights a pass produces live in mapped scratch files, byte for byte what it would have held in memory.</summary>
public sealed class WeightSpillTests
{
    private const string Pipeline = "fold,dce,cse,fuse,quantize{bits=4}";

    [Fact]
    public void Quantized_codes_are_mapped_from_scratch_files_with_the_same_bytes()
    {
        var dir = Path.Combine(Path.GetTempPath(), "kiln-spill-test-" + Guid.NewGuid().ToString("N"));
        using var inMemory = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        PassManager.Run(inMemory, PassPipeline.Parse(Pipeline));
        using (var spilled = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx")))
        {
            var spill = new WeightSpill(dir, minimumBytes: 1);
            spilled.Resources.Add(spill);
            PassManager.Run(spilled, PassPipeline.Parse(Pipeline), spill: spill);
            var codes = spilled.Graph.Constants.Where(c => c.Name.Contains(".q4", StringComparison.Ordinal) || c.Name.Contains(".q8", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(codes);
            Assert.All(codes, c => Assert.IsType<MappedTensorData>(c.Data));
            Assert.True(spill.Bytes >= codes.Sum(c => c.Data!.ByteLength));
            foreach (var c in codes)
                Assert.True(c.Data!.Bytes.SequenceEqual(inMemory.Graph.Constants.Single(m => m.Name == c.Name).Data!.Bytes), c.Name);
        }
        Assert.False(Directory.Exists(dir)); // disposed with its model
    }
}
