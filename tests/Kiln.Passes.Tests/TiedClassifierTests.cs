using Kiln.Ir;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Passes.Tests;

/// <summary>
/// The documented default keeps embeddings and the classifier at int8, however the exporter wrote the classifier:
/// the text-generation example computes its logits as Reshape(MatMul(h, Transpose(E))), which fold turns into a
/// separate transposed copy of the embedding.
/// </summary>
public sealed class TiedClassifierTests
{
    private static string Kjv => Path.Combine(Fixtures.RepoRoot, "examples", "text-generation", "Models", "kjv.onnx");

    [Fact]
    public void The_example_models_classifier_is_the_int8_embedding_table_read_by_both()
    {
        using var model = OnnxImporter.Import(Kjv);
        var reports = PassManager.Run(model, "fold,dce,cse,fuse,quantize{bits=4}");
        var layers = reports[^1].Layers;
        // One int8 table for the lookup and the logits; no int4 copy of it.
        var table = Assert.Single(layers, l => l.Note?.Contains("embedding/classifier", StringComparison.Ordinal) == true);
        Assert.Equal("m.tok_embeddings", table.Weight);
        Assert.StartsWith("int8", table.Format);
        Assert.DoesNotContain(layers, l => l.FloatBytes == table.FloatBytes && l != table);
        var g = model.Graph;
        var gather = Assert.Single(g.Nodes, n => n.QualifiedOp == "kiln:QuantizedGather");
        var logits = g.Outputs.Single(o => o.Value.Name == "logits").Value;
        var classifier = logits.Producer!.QualifiedOp == "Reshape" ? logits.Producer.Inputs[0]!.Producer! : logits.Producer;
        Assert.Equal("kiln:QuantizedMatMul", classifier.QualifiedOp);
        Assert.Same(gather.Inputs[0], classifier.Inputs[1]);
        // The transposed float copy is gone from the model.
        Assert.DoesNotContain(g.Constants, c => c.Data is { Elem: DType.F32 } d && d.ElementCount == table.FloatBytes / 4);
    }

    [Fact]
    public void Skipping_the_classifier_by_the_name_it_has_in_the_graph_still_skips_it()
    {
        using var model = OnnxImporter.Import(Kjv);
        PassManager.Run(model, "fold,dce,cse,fuse,quantize{bits=4 skip=[/m/Transpose_output_0]}");
        var logits = model.Graph.Outputs.Single(o => o.Value.Name == "logits").Value;
        Assert.Equal("MatMul", logits.Producer!.Inputs[0]!.Producer!.QualifiedOp);
        Assert.Single(model.Graph.Nodes, n => n.QualifiedOp == "kiln:QuantizedGather");
    }
}
