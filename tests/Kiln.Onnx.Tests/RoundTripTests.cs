using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Onnx.Tests;

/// <summary>import → print → parse → print gives the same text, for every model the registry supports.</summary>
public sealed class RoundTripTests(ITestOutputHelper output)
{
    public static TheoryData<string> SharedModels() => new(Fixtures.SharedModelFiles().Select(f => Path.GetRelativePath(Fixtures.SharedModels, f)));

    internal static string RoundTrip(Model model)
    {
        var text = KirPrinter.Print(model);
        var weights = new InMemoryWeights(KirPrinter.ReferencedWeights(model.Graph));
        using var parsed = KirParser.ParseModel(text, weights);
        Verifier.Verify(parsed.Graph);
        var again = KirPrinter.Print(parsed);
        Assert.Equal(text, again);
        return text;
    }

    [Theory]
    [MemberData(nameof(SharedModels))]
    public void SharedModelRoundTrips(string relative)
    {
        using var model = OnnxImporter.Import(Fixtures.Model(relative));
        var text = RoundTrip(model);
        Assert.DoesNotContain(": ?", text);
    }

    [Fact]
    public void SharedModelRoundTripsThroughWeightsFile()
    {
        using var model = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
        var dir = Directory.CreateTempSubdirectory("kiln-rt");
        try
        {
            var kir = Path.Combine(dir.FullName, "m.kir");
            var text = KirPrinter.Print(model);
            File.WriteAllText(kir, text);
            WeightFile.Write(WeightFile.PathFor(kir), KirPrinter.ReferencedWeights(model.Graph));
            using var weights = WeightFile.Open(WeightFile.PathFor(kir));
            using var parsed = KirParser.ParseModel(File.ReadAllText(kir), weights, kir);
            Assert.Equal(text, KirPrinter.Print(parsed));
            Assert.Contains("weight #", text);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>The lowest counts of conformance models that import and round-trip; a regression below fails.</summary>
    private const int MinimumRoundTripped = 1050;

    [Fact]
    public void ConformanceModelsRoundTrip()
    {
        var cases = Fixtures.ConformanceCases().ToList();
        Assert.True(cases.Count > 1000, $"expected libonnx-testdata under {Fixtures.ConformanceRoot} (apt-get install libonnx-testdata); found {cases.Count} cases");
        var ok = 0;
        var failures = new SortedDictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var c in cases)
        {
            var path = Path.Combine(Fixtures.ConformanceRoot, c, "model.onnx");
            try
            {
                using var model = OnnxImporter.Import(path);
                RoundTrip(model);
                ok++;
            }
            catch (KilnException e)
            {
                var d = e.Diagnostics[0];
                var key = d.Code == DiagnosticCode.UnsupportedOp ? "unsupported op: " + d.Message.Split('\n').Skip(1).FirstOrDefault()?.Trim().Split(':')[0]
                    : $"{d.CodeText} {d.Op}";
                if (!failures.TryGetValue(key, out var l)) failures[key] = l = [];
                l.Add(c + ": " + d.Message.Split('\n')[0]);
            }
        }
        output.WriteLine($"conformance models: {cases.Count}, imported and round-tripped: {ok}, not imported: {cases.Count - ok}");
        foreach (var (k, v) in failures) output.WriteLine($"  {k}: {v.Count} — {string.Join("; ", v.Take(3))}");
        File.WriteAllLines(Path.Combine(Path.GetTempPath(), "kiln-roundtrip-summary.txt"),
            [$"{cases.Count} cases, {ok} round-tripped", .. failures.SelectMany(kv => kv.Value.Select(x => $"{kv.Key}\t{x}"))]);
        Assert.True(ok >= MinimumRoundTripped, $"{ok} of {cases.Count} conformance models round-tripped; expected at least {MinimumRoundTripped}");
    }
}
