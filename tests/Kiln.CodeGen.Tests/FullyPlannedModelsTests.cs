using Kiln.Compiler;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// Every model we ship or test with compiles to fully planned code: no node runs through a generic operator call
/// (the shared fixtures, both examples' models, tiny-mlp). A new exporter pattern that loses a planned kernel shows
/// up here with the node, its op and why.
/// </summary>
public sealed class FullyPlannedModelsTests
{
    public static IEnumerable<object[]> Models() =>
        Fixtures.SharedModelFiles()
            .Concat(new[] { "examples/text-generation/Models/kjv.onnx", "examples/ocr/Models/det.onnx", "examples/ocr/Models/cls.onnx", "examples/tiny-mlp/model.onnx" }
                .Select(p => Path.Combine(Fixtures.RepoRoot, p)))
            .Select(p => new object[] { p });

    [Theory]
    [MemberData(nameof(Models))]
    public void Compiles_with_no_generic_operator_call(string path)
    {
        using var model = OnnxImporter.Import(path);
        var result = ModelCompiler.Compile(model, path, new CompileOptions { Verify = false });
        var calls = result.Plan.Split('\n').Where(l => l.Contains("generic operator call:") || l.Length > 0 && !l.StartsWith(' ') && l.Contains("not planned")).Distinct();
        Assert.True(result.GenericCalls == 0 && result.FullyPlanned, $"{Path.GetFileName(path)}: {result.GenericCalls} generic operator calls\n" + string.Join("\n", calls));
    }
}
