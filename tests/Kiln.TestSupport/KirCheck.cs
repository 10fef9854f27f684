using Kiln.Ir;
using Kiln.Ir.Diagnostics;

namespace Kiln.TestSupport;

/// <summary>
/// Runs a .kir test file in the spirit of LLVM's FileCheck: the file holds input IR, one <c># RUN:</c> pipeline,
/// and ordered <c># CHECK:</c> / <c># CHECK-NOT:</c> lines the printed result must contain (CHECK-NOT between two
/// CHECKs applies to the text between their matches), or <c># ERROR:</c> lines the pipeline's diagnostic must contain.
/// </summary>
public static class KirCheck
{
    public static IEnumerable<string> Files(params string[] folder) =>
        Directory.EnumerateFiles(Path.Combine([Fixtures.RepoRoot, .. folder]), "*.kir").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal);

    /// <summary>Parses the file, applies <paramref name="run"/> with the RUN pipeline, checks the printed model; returns the failures (empty when it passes).</summary>
    public static IReadOnlyList<string> Run(string path, Action<Model, string> run)
    {
        var file = Path.GetFileName(path);
        var text = File.ReadAllText(path);
        var directives = text.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("# ", StringComparison.Ordinal))
            .Select(l => l[2..]).Select(l => (Kind: l.Split(':')[0], Arg: l.Contains(':') ? l[(l.IndexOf(':') + 1)..].Trim() : "")).ToList();
        var pipeline = directives.Where(d => d.Kind == "RUN").Select(d => d.Arg).SingleOrDefault() ?? "";
        var errors = directives.Where(d => d.Kind == "ERROR").Select(d => d.Arg).ToList();
        var failures = new List<string>();
        string output;
        try
        {
            using var model = KirParser.ParseModel(text, null, file);
            run(model, pipeline);
            output = KirPrinter.Print(model);
        }
        catch (KilnException e) when (errors.Count > 0)
        {
            foreach (var expected in errors)
                if (!e.Message.Contains(expected, StringComparison.Ordinal)) failures.Add($"{file}: error '{e.Message}' does not contain '{expected}'");
            return failures;
        }
        if (errors.Count > 0) return [$"{file}: expected an error containing '{string.Join("', '", errors)}' but the pipeline succeeded:\n{output}"];
        if (!directives.Any(d => d.Kind == "CHECK")) return [$"{file}: no CHECK lines"];
        var pos = 0;
        var pendingNot = new List<string>();
        foreach (var (kind, arg) in directives)
        {
            if (kind == "CHECK-NOT") { pendingNot.Add(arg); continue; }
            if (kind != "CHECK") continue;
            var at = output.IndexOf(arg, pos, StringComparison.Ordinal);
            if (at < 0) return [$"{file}: CHECK '{arg}' not found after offset {pos} in:\n{output}"];
            foreach (var not in pendingNot)
                if (output.IndexOf(not, pos, at - pos, StringComparison.Ordinal) >= 0) failures.Add($"{file}: CHECK-NOT '{not}' found before '{arg}' in:\n{output}");
            pendingNot.Clear();
            pos = at + arg.Length;
        }
        foreach (var not in pendingNot)
            if (output.IndexOf(not, pos, StringComparison.Ordinal) >= 0) failures.Add($"{file}: CHECK-NOT '{not}' found in:\n{output[pos..]}");
        return failures;
    }
}
