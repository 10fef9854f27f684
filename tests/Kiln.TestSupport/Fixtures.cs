namespace Kiln.TestSupport;

/// <summary>Where test fixtures live: ../shared/models beside the repository, and Debian's ONNX conformance data.</summary>
public static class Fixtures
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string SharedModels => Path.Combine(RepoRoot, "..", "shared", "models");

    public static string SharedReference => Path.Combine(RepoRoot, "..", "shared", "reference");

    public const string ConformanceRoot = "/usr/share/libonnx-testdata/data";

    public static string Model(string relative) => Path.GetFullPath(Path.Combine(SharedModels, relative));

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
