using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.Passes.Tests;

/// <summary>
/// Every fuse-*.kir graph computes the same values after <c>fuse</c> (reference evaluator) as ONNX Runtime computes
/// on the unfused graph, and as the evaluator does on it (random f32 inputs, symbolic dims set to 3).
/// </summary>
public sealed class FusionNumericsTests
{
    public static TheoryData<string> Files() =>
        new(KirCheck.Files("tests", "Kiln.Passes.Tests", "ir").Where(f => f.StartsWith("fuse-", StringComparison.Ordinal)
            && !File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Passes.Tests", "ir", f)).Contains("# ERROR:", StringComparison.Ordinal)));

    [Theory]
    [MemberData(nameof(Files))]
    public void Fusion_keeps_the_values(string file)
    {
        var text = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Passes.Tests", "ir", file));
        using var plain = KirParser.ParseModel(text, null, file);
        using var fused = KirParser.ParseModel(text, null, file);
        var pipeline = text.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("# RUN:", StringComparison.Ordinal))?[6..].Trim() ?? "fuse";
        PassManager.Run(fused, pipeline);
        var rng = new Random(3);
        var inputs = new Dictionary<string, object?>();
        foreach (var v in plain.Graph.Inputs)
        {
            Assert.True(v.TensorType is { Elem: DType.F32, Shape: not null }, $"{file}: input {v.Name} is not an f32 tensor of known rank");
            var shape = v.TensorType!.Shape!;
            var dims = shape.Dims.Select(d => (int)(d.Value ?? 3)).ToArray();
            var data = new float[Tensor.Count(dims)];
            for (var i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
            inputs[v.Name] = Tensor.FromArray(DType.F32, dims, data);
        }
        var ort = OrtRunner.RunModel(plain, inputs);
        var want = new Interpreter(plain.Graph).Run(inputs);
        var got = new Interpreter(fused.Graph).Run(inputs);
        Assert.NotEmpty(want);
        foreach (var (name, value) in want)
        {
            var o = ort[name];
            var w = ((Tensor)value!).Span<float>();
            var g = ((Tensor)got[name]!).Span<float>();
            Assert.Equal(o.Length, g.Length);
            for (var i = 0; i < w.Length; i++)
            {
                Assert.True(Math.Abs(o[i] - g[i]) <= 1e-5 * Math.Max(1, Math.Abs(o[i])), $"{file}: {name}[{i}] fused {g[i]}, ONNX Runtime unfused {o[i]}");
                Assert.True(Math.Abs(w[i] - g[i]) <= 1e-5 * Math.Max(1, Math.Abs(w[i])), $"{file}: {name}[{i}] fused {g[i]}, evaluator unfused {w[i]}");
            }
        }
    }
}
