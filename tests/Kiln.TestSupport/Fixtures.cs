namespace Kiln.TestSupport;

/// <summary>Where test fixtures live: ../shared/models beside the repository, and Debian's ONNX conformance data.</summary>
public static class Fixtures
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string SharedModels => Path.Combine(RepoRoot, "..", "shared", "models");

    public static string SharedReference => Path.Combine(RepoRoot, "..", "shared", "reference");

    public const string ConformanceRoot = "/usr/share/libonnx-testdata/data";

    public static string Model(string relative) => Path.GetFullPath(Path.Combine(SharedModels, relative));

    /// <summary>(model, data set, atol, rtol): every data set of the shared fixtures with the model and tolerances shared/models/README.md gives it.</summary>
    public static IReadOnlyList<(string Model, string DataSet, double Atol, double Rtol)> SharedDataSets { get; } =
    [
        ("stories260k/model-nocache.onnx", "stories260k/test_data_set_0", 1e-4, 0),
        ("stories260k/model.onnx", "stories260k/kvcache_test_data_set_0", 1e-4, 0),
        ("stories260k/model.onnx", "stories260k/kvcache_test_data_set_1", 1e-4, 0),
        ("llama-tiny-random/model.onnx", "llama-tiny-random/test_data_set_0", 1e-4, 0),
        ("llama-tiny-random/model.onnx", "llama-tiny-random/test_data_set_1", 1e-4, 0),
        ("paddleocr/det/model.onnx", "paddleocr/det/test_data_set_0", 1e-4, 1e-3),
        ("paddleocr/cls/model.onnx", "paddleocr/cls/test_data_set_0", 1e-4, 1e-3),
    ];

    /// <summary><see cref="SharedDataSets"/> as theory rows (model, data set, atol, rtol) for <c>[MemberData]</c>.</summary>
    public static IEnumerable<object[]> SharedDataSetRows => SharedDataSets.Select(d => new object[] { d.Model, d.DataSet, d.Atol, d.Rtol });

    /// <summary>Every model.onnx of the shared fixtures (model-nocache.onnx included).</summary>
    public static IEnumerable<string> SharedModelFiles() =>
        Directory.EnumerateFiles(SharedModels, "*.onnx", SearchOption.AllDirectories).Order(StringComparer.Ordinal);

    /// <summary>Conformance cases (folders with model.onnx) under the Debian data root, as paths relative to it ("node/test_abs").</summary>
    public static IEnumerable<string> ConformanceCases() =>
        Directory.Exists(ConformanceRoot)
            ? Directory.EnumerateFiles(ConformanceRoot, "model.onnx", SearchOption.AllDirectories)
                .Select(f => Path.GetRelativePath(ConformanceRoot, Path.GetDirectoryName(f)!))
                .Order(StringComparer.Ordinal)
            : [];

    /// <summary>ONNX Runtime's recorded status per conformance case (shared/reference/onnxruntime-*-conformance.tsv).</summary>
    public static IReadOnlyDictionary<string, string> OrtConformance()
    {
        var file = Directory.EnumerateFiles(SharedReference, "onnxruntime-*-conformance.tsv").Single();
        return File.ReadLines(file).Skip(1).Select(l => l.Split('\t')).ToDictionary(c => c[0], c => c[1]);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Compiler.sln"))) return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root (Compiler.sln) above " + AppContext.BaseDirectory);
    }
}
