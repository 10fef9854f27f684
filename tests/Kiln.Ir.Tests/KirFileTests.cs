using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Ir.Inference;
using Kiln.TestSupport;

namespace Kiln.Ir.Tests;

/// <summary>
/// Runs the .kir files under tests/Kiln.Ir.Tests/ir in the spirit of LLVM's FileCheck: each holds input IR,
/// a <c># RUN:</c> pipeline, and ordered <c># CHECK:</c> / <c># CHECK-NOT:</c> lines, or <c># ERROR:</c> lines the
/// pipeline's diagnostics must contain.
/// </summary>
public sealed class KirFileTests
{
    public static TheoryData<string> Files() =>
        new(Directory.EnumerateFiles(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Ir.Tests", "ir"), "*.kir").Select(Path.GetFileName).Order()!);

    [Theory]
    [MemberData(nameof(Files))]
    public void Run(string file)
    {
        var path = Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Ir.Tests", "ir", file);
        var text = File.ReadAllText(path);
        var directives = text.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith("# ", StringComparison.Ordinal))
            .Select(l => l[2..]).Select(l => (Kind: l.Split(':')[0], Arg: l.Contains(':') ? l[(l.IndexOf(':') + 1)..].Trim() : "")).ToList();
        var pipeline = directives.Where(d => d.Kind == "RUN").Select(d => d.Arg).SingleOrDefault() ?? "";
        var errors = directives.Where(d => d.Kind == "ERROR").Select(d => d.Arg).ToList();
        string output;
        try
        {
            using var model = KirParser.ParseModel(text, null, file);
            foreach (var step in pipeline.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                switch (step)
                {
                    case "infer": ShapeInference.Run(model.Graph); break;
                    case "verify": Verifier.Verify(model.Graph); break;
                    default: throw new InvalidOperationException($"{file}: unknown pipeline step '{step}'");
                }
            }
            output = KirPrinter.Print(model);
        }
        catch (KilnException e) when (errors.Count > 0)
        {
            foreach (var expected in errors) Assert.Contains(expected, e.Message);
            return;
        }
        Assert.True(errors.Count == 0, $"{file}: expected an error containing '{string.Join("', '", errors)}' but the pipeline succeeded:\n{output}");
        var pos = 0;
        var pendingNot = new List<string>();
        foreach (var (kind, arg) in directives)
        {
            if (kind == "CHECK-NOT") { pendingNot.Add(arg); continue; }
            if (kind != "CHECK") continue;
            var at = output.IndexOf(arg, pos, StringComparison.Ordinal);
            Assert.True(at >= 0, $"{file}: CHECK '{arg}' not found after offset {pos} in:\n{output}");
            foreach (var not in pendingNot)
                Assert.True(output.IndexOf(not, pos, at - pos, StringComparison.Ordinal) < 0, $"{file}: CHECK-NOT '{not}' found before '{arg}'");
            pendingNot.Clear();
            pos = at + arg.Length;
        }
        foreach (var not in pendingNot)
            Assert.True(output.IndexOf(not, pos, StringComparison.Ordinal) < 0, $"{file}: CHECK-NOT '{not}' found in:\n{output[pos..]}");
    }
}
