using Kiln.Compiler;
using Kiln.Evaluator;
using Kiln.Onnx;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Passes.Tests;

/// <summary>The default pipeline on the real models: fewer nodes, same answers (the evaluator against the reference outputs).</summary>
public sealed class SharedModelPassTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(Fixtures.SharedDataSetRows), MemberType = typeof(Fixtures))]
    public void Default_pipeline_keeps_the_reference_outputs(string model, string dataSet, double atol, double rtol)
    {
        using var m = OnnxImporter.Import(Fixtures.Model(model));
        var before = m.Graph.Nodes.Count;
        var reports = PassManager.Run(m);
        var after = m.Graph.Nodes.Count;
        output.WriteLine($"{model}: {before} → {after} nodes");
        foreach (var r in reports) output.WriteLine($"  {r.Step}: {r.NodesBefore} → {r.NodesAfter} {string.Join(" ", r.Counts.Select(c => $"{c.Key}={c.Value}"))}");
        Assert.True(after <= before);
        var checks = DataSets.Check(new Interpreter(m.Graph), m.Graph, Fixtures.Model(dataSet), atol, rtol);
        Assert.NotEmpty(checks);
        Assert.All(checks, c => Assert.True(c.Ok, $"{c.Name}: {c.Problem} (max abs {c.MaxAbs})"));
    }
}
