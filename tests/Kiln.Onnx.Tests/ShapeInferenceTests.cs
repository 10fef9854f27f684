using Kiln.Ir;
using Kiln.Ir.Inference;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Onnx.Tests;

public sealed class ShapeInferenceTests
{
    private static string TypeOf(Model m, string value) => KirPrinter.Type(m.Graph.Lookup(value)!.Type);

    [Fact]
    public void Stories260kOutputsAreSymbolic()
    {
        using var m = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        Assert.Equal("f32[batch, seq, 512]", TypeOf(m, "logits"));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal("f32[batch, 4, past_seq + seq, 8]", TypeOf(m, $"present.{i}.key"));
            Assert.Equal("f32[batch, 4, past_seq + seq, 8]", TypeOf(m, $"present.{i}.value"));
        }
        Assert.Equal("past_seq + seq", m.Graph.Bindings["total_seq"].ToString());
        var text = KirPrinter.Print(m);
        Assert.Contains("%present.0.key: f32[batch, 4, total_seq, 8]", text); // declared type in the signature
        Assert.Contains("where total_seq = past_seq + seq", text);
        Assert.DoesNotContain(m.Graph.Nodes.SelectMany(n => n.Outputs).OfType<Value>(), v => v.Type is not TensorType { Shape: not null } t || t.Shape.Dims.Any(d => d.IsUnknown));
    }

    [Fact]
    public void LlamaTinyRandomOutputsAreSymbolic()
    {
        using var m = OnnxImporter.Import(Fixtures.Model("llama-tiny-random/model.onnx"));
        Assert.Equal("f32[batch, seq, 512]", TypeOf(m, "logits"));
        Assert.Equal("f32[batch, 2, past_seq + seq, 16]", TypeOf(m, "present.0.key"));
        Assert.Equal("f32[batch, 2, past_seq + seq, 16]", TypeOf(m, "present.1.value"));
    }

    /// <summary>Every value of PaddleOCR det at input [1, 3, 256, 320] has the concrete shape ONNX Runtime computes.</summary>
    [Fact]
    public void PaddleOcrDetShapesMatchOnnxRuntime()
    {
        using var m = OnnxImporter.Import(Fixtures.Model("paddleocr/det/model.onnx"));
        m.Graph.Inputs[0].Type = new TensorType(DType.F32, Shape.Of(1, 3, 256, 320));
        ShapeInference.Run(m.Graph);
        var values = m.Graph.Nodes.SelectMany(n => n.Outputs).OfType<Value>().ToList();
        Assert.True(values.Count > 300);
        foreach (var v in values)
            Assert.True(v.TensorType?.Shape?.IsFullyKnown == true, $"{v} has type {KirPrinter.Type(v.Type)}");
        // Ask ONNX Runtime for every intermediate value by making each a graph output.
        foreach (var v in values.Where(v => m.Graph.Outputs.All(o => o.Value != v))) m.Graph.AddOutput(v);
        var (inputs, _) = OrtRunner.ReadDataSet(Fixtures.Model("paddleocr/det/test_data_set_0"))!.Value;
        var names = m.Graph.Outputs.Select(o => o.Name).ToList();
        var actual = OrtRunner.Run(OnnxExporter.ExportToBytes(m), inputs, names);
        for (var i = 0; i < names.Count; i++)
        {
            var ours = m.Graph.Outputs[i].Value.TensorType!.Shape!.ToConcrete()!;
            Assert.True(ours.SequenceEqual(actual[i].Dims), $"{names[i]}: inferred [{string.Join(", ", ours)}], ONNX Runtime [{string.Join(", ", actual[i].Dims)}]");
        }
    }
}
