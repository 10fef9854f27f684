using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Onnx.Tests;

/// <summary>import → export → ONNX Runtime reproduces the expected outputs: the exported ONNX means what the original did.</summary>
public sealed class ExportTests(ITestOutputHelper output)
{
    /// <summary>(model, data set, atol, rtol) pairs as shared/models/README.md pairs them.</summary>
    [Theory]
    [MemberData(nameof(Fixtures.SharedDataSetRows), MemberType = typeof(Fixtures))]
    public void ExportedSharedModelReproducesDataSet(string model, string dataSet, double atol, double rtol)
    {
        using var m = OnnxImporter.Import(Fixtures.Model(model));
        var bytes = OnnxExporter.ExportToBytes(m);
        var (inputs, expected) = OrtRunner.ReadDataSet(Fixtures.Model(dataSet))!.Value;
        var actual = OrtRunner.Run(bytes, inputs);
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
            Assert.Null(OrtRunner.Compare(actual[i], expected[i], atol, rtol));
    }

    [Fact]
    public void ExportedConformanceCasesPassInOnnxRuntime()
    {
        var ort = Fixtures.OrtConformance();
        int tried = 0, passed = 0, notImported = 0, tensorDataMissing = 0;
        var failures = new List<string>();
        foreach (var c in Fixtures.ConformanceCases().Where(c => ort.GetValueOrDefault(c) == "pass"))
        {
            var dir = Path.Combine(Fixtures.ConformanceRoot, c);
            Model model;
            try { model = OnnxImporter.Import(Path.Combine(dir, "model.onnx")); }
            catch (KilnException) { notImported++; continue; }
            using (model)
            {
                var bytes = OnnxExporter.ExportToBytes(model);
                foreach (var set in Directory.EnumerateDirectories(dir, "test_data_set_*"))
                {
                    if (OrtRunner.ReadDataSet(set) is not var (inputs, expected)) { tensorDataMissing++; continue; }
                    tried++;
                    try
                    {
                        var actual = OrtRunner.Run(bytes, inputs);
                        var problem = actual.Count != expected.Count ? $"{actual.Count} outputs, expected {expected.Count}"
                            : Enumerable.Range(0, expected.Count).Select(i => OrtRunner.Compare(actual[i], expected[i], 1e-7, 1e-3)).FirstOrDefault(p => p is not null);
                        if (problem is null) passed++;
                        else failures.Add($"{c}/{Path.GetFileName(set)}: {problem}");
                    }
                    catch (Exception e) when (e is Microsoft.ML.OnnxRuntime.OnnxRuntimeException or NotSupportedException)
                    {
                        failures.Add($"{c}/{Path.GetFileName(set)}: {e.Message.Split('\n')[0]}");
                    }
                }
            }
        }
        output.WriteLine($"exported conformance data sets: {tried}, passed in ONNX Runtime: {passed}; models not imported: {notImported}; sets with non-tensor data: {tensorDataMissing}");
        foreach (var f in failures) output.WriteLine("  " + f);
        File.WriteAllLines(Path.Combine(Path.GetTempPath(), "kiln-export-summary.txt"), [$"{tried} tried, {passed} passed, {notImported} not imported, {tensorDataMissing} non-tensor", .. failures]);
        Assert.True(tried > 800, $"only {tried} data sets tried");
        Assert.Empty(failures);
    }
}
