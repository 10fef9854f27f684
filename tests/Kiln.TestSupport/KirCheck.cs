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

    private sealed record Directives(string Pipeline, IReadOnlyList<string> Errors, IReadOnlyList<(string Kind, string Arg)> Checks, string? Negative, string? Control);

    private static Directives Read(string text)
    {
        var directives = text.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("# ", StringComparison.Ordinal))
            .Select(l => l[2..]).Select(l => (Kind: l.Split(':')[0], Arg: l.Contains(':') ? l[(l.IndexOf(':') + 1)..].Trim() : "")).ToList();
        string? One(string kind) => directives.Where(d => d.Kind == kind).Select(d => d.Arg).SingleOrDefault();
        return new Directives(One("RUN") ?? "", directives.Where(d => d.Kind == "ERROR").Select(d => d.Arg).ToList(),
            directives.Where(d => d.Kind is "CHECK" or "CHECK-NOT").ToList(), One("NEGATIVE"), One("CONTROL"));
    }

    /// <summary>The printed model after <paramref name="run"/> with the file's RUN pipeline (or <paramref name="pipeline"/>).</summary>
    private static string Output(string path, string text, Action<Model, string> run, string pipeline)
    {
        using var model = KirParser.ParseModel(text, null, Path.GetFileName(path));
        run(model, pipeline);
        return KirPrinter.Print(model);
    }

    /// <summary>Parses the file, applies <paramref name="run"/> with the RUN pipeline, checks the printed model; returns the failures (empty when it passes).</summary>
    public static IReadOnlyList<string> Run(string path, Action<Model, string> run) => RunOn(path, (model, pipeline) =>
    {
        run(model, pipeline);
        return KirPrinter.Print(model);
    });

    /// <summary>As <see cref="Run"/>, checking the text <paramref name="produce"/> makes from the model and the RUN line (a plan, generated code).</summary>
    public static IReadOnlyList<string> RunOn(string path, Func<Model, string, string> produce)
    {
        var file = Path.GetFileName(path);
        var text = File.ReadAllText(path);
        var d = Read(text);
        string output;
        try
        {
            using var model = KirParser.ParseModel(text, null, file);
            output = produce(model, d.Pipeline);
        }
        catch (KilnException e) when (d.Errors.Count > 0)
        {
            return d.Errors.Where(expected => !e.Message.Contains(expected, StringComparison.Ordinal))
                .Select(expected => $"{file}: error '{e.Message}' does not contain '{expected}'").ToList();
        }
        if (d.Errors.Count > 0) return [$"{file}: expected an error containing '{string.Join("', '", d.Errors)}' but the pipeline succeeded:\n{output}"];
        return Match(file, d, output);
    }

    private static List<string> Match(string file, Directives d, string output)
    {
        if (!d.Checks.Any(c => c.Kind == "CHECK")) return [$"{file}: no CHECK lines"];
        // FileCheck's rule: a CHECK-NOT looks between the matches of the CHECKs around it, so one after the last CHECK
        // only sees the text after that match (in a printed graph, next to nothing): refused, as it would check nothing.
        if (d.Checks[^1].Kind == "CHECK-NOT")
            return [$"{file}: CHECK-NOT '{d.Checks[^1].Arg}' comes after the last CHECK, where it sees only the text after that match: put it between the CHECKs around the place the text would be printed"];
        var failures = new List<string>();
        var pos = 0;
        var pendingNot = new List<string>();
        foreach (var (kind, arg) in d.Checks)
        {
            if (kind == "CHECK-NOT") { pendingNot.Add(arg); continue; }
            var at = output.IndexOf(arg, pos, StringComparison.Ordinal);
            if (at < 0) return [$"{file}: CHECK '{arg}' not found after offset {pos} in:\n{output}"];
            foreach (var not in pendingNot)
                if (output.IndexOf(not, pos, at - pos, StringComparison.Ordinal) >= 0) failures.Add($"{file}: CHECK-NOT '{not}' found before '{arg}' in:\n{output}");
            pendingNot.Clear();
            pos = at + arg.Length;
        }
        return failures;
    }

    /// <summary>
    /// Proves a file can fail: with <paramref name="noOp"/> running its pipeline with every pass a no-op, the file must
    /// fail, and each CHECK-NOT's text must be in that output past the CHECKs before it (where it looks). A file whose
    /// pass is meant to leave its input alone says so with <c># NEGATIVE: why</c>; with <c># CONTROL: pipeline</c>,
    /// that pipeline must make it fail instead. Returns the problems (empty when the file's checks can fail).
    /// </summary>
    public static IReadOnlyList<string> ProveCanFail(string path, Action<Model, string> noOp, Action<Model, string> run)
    {
        var file = Path.GetFileName(path);
        var text = File.ReadAllText(path);
        var d = Read(text);
        if (d.Errors.Count > 0) return [];
        if (d.Negative is not null)
        {
            if (d.Control is null) return [];
            return Match(file, d, Output(path, text, run, d.Control)).Count > 0 ? [] : [$"{file}: passes under its CONTROL pipeline '{d.Control}', so its CHECK-NOTs see nothing"];
        }
        var output = Output(path, text, noOp, d.Pipeline);
        var problems = new List<string>();
        if (Match(file, d, output).Count == 0) problems.Add($"{file}: passes with its passes as no-ops: it checks nothing the pass does");
        var pos = 0;
        foreach (var (kind, arg) in d.Checks)
        {
            if (kind == "CHECK-NOT")
            {
                if (output.IndexOf(arg, pos, StringComparison.Ordinal) < 0)
                    problems.Add($"{file}: CHECK-NOT '{arg}' is not in the unchanged graph where it looks (past offset {pos}), so it cannot fail:\n{output}");
                continue;
            }
            var at = output.IndexOf(arg, pos, StringComparison.Ordinal);
            if (at < 0) break; // what the pass creates: later CHECK-NOTs are judged from here
            pos = at + arg.Length;
        }
        return problems;
    }
}
