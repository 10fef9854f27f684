using Kiln.Compiler;
using Kiln.Evaluator;
using Kiln.TestSupport;

namespace Kiln.Evaluator.Tests;

public sealed class ConformanceTests
{
    private static readonly Lazy<List<CaseResult>> Results = new(() =>
        Conformance.Run([Fixtures.ConformanceRoot], null, null, new EvaluatorOptions { TimeLimit = TimeSpan.FromSeconds(60) }, TextWriter.Null));

    private static Dictionary<string, int> Minimums() =>
        File.ReadAllLines(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Evaluator.Tests", "conformance-minimum.txt"))
            .Where(l => l.Length > 0 && !l.StartsWith('#'))
            .Select(l => l.Split(' ')).ToDictionary(p => p[0], p => int.Parse(p[1]));

    [Fact]
    public void Conformance_pass_counts_do_not_drop_below_the_recorded_numbers()
    {
        var minimums = Minimums();
        Assert.Equal(4, minimums.Count);
        foreach (var (group, min) in minimums)
        {
            var passed = Results.Value.Count(r => r.Case.StartsWith(group + "/", StringComparison.Ordinal) && r.Status == "pass");
            Assert.True(passed >= min, $"{group}: {passed} cases pass, the recorded minimum is {min}");
        }
    }

    [Fact]
    public void Conformance_passes_at_least_as_many_cases_as_onnx_runtime_in_every_group()
    {
        var ort = Fixtures.OrtConformance();
        Assert.Equal(ort.Count, Results.Value.Count);
        foreach (var group in new[] { "node", "pytorch-converted", "pytorch-operator", "simple" })
        {
            var ours = Results.Value.Count(r => r.Case.StartsWith(group + "/", StringComparison.Ordinal) && r.Status == "pass");
            var theirs = ort.Count(kv => kv.Key.StartsWith(group + "/", StringComparison.Ordinal) && kv.Value == "pass");
            Assert.True(ours >= theirs, $"{group}: Kiln passes {ours}, ONNX Runtime {theirs}");
        }
    }

    [Fact]
    public void Every_case_using_only_ops_of_the_shared_models_passes()
    {
        var ops = Fixtures.SharedModelFiles().SelectMany(f =>
        {
            using var m = Onnx.OnnxImporter.Import(f);
            return m.Graph.AllGraphs().SelectMany(g => g.Nodes).Select(n => n.QualifiedOp).ToList();
        }).ToHashSet();
        // Constant nodes become constants at import; the models' files use them too.
        ops.Add("Constant");
        var covered = Results.Value.Where(r => r.OpTypes.Length > 0 && r.OpTypes.Split(',').All(ops.Contains)).ToList();
        Assert.True(covered.Count > 100, $"only {covered.Count} cases use just the shared models' ops");
        var failing = covered.Where(r => r.Status != "pass").Select(r => $"{r.Case}: {r.Reason}").ToList();
        Assert.True(failing.Count == 0, string.Join("\n", failing));
    }

    [Fact]
    public void Tsv_rows_use_the_reference_file_columns_and_status_words()
    {
        var path = Path.Combine(Path.GetTempPath(), $"kiln-conf-{Guid.NewGuid():N}.tsv");
        try
        {
            Conformance.Run([Fixtures.ConformanceRoot], "test_abs", path, new EvaluatorOptions(), TextWriter.Null);
            var lines = File.ReadAllLines(path);
            Assert.Equal("case\tstatus\top_types\ttags\tseconds\treason", lines[0]);
            Assert.Contains(lines, l => l.StartsWith("node/test_abs\tpass\tAbs\t", StringComparison.Ordinal));
            var words = new HashSet<string> { "pass", "fail", "load-error", "run-error", "unsupported-data" };
            Assert.All(Results.Value, r => Assert.Contains(r.Status, words));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
