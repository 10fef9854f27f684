using System.Xml.Linq;
using Kiln.TestSupport;

namespace Kiln.Ir.Tests;

/// <summary>Each assembly references only what architecture.md allows, and test projects reach the compiler through Kiln.Compiler, not the CLI.</summary>
public sealed class LayeringTests
{
    private static readonly Dictionary<string, string[]> Allowed = new()
    {
        ["Kiln.Runtime"] = [],
        ["Kiln.Ir"] = ["Kiln.Runtime"],
        ["Kiln.Onnx"] = ["Kiln.Ir"],
        ["Kiln.Evaluator"] = ["Kiln.Ir", "Kiln.Runtime"],
        ["Kiln.Passes"] = ["Kiln.Ir", "Kiln.Runtime", "Kiln.Evaluator"],
        ["Kiln.CodeGen"] = ["Kiln.Ir", "Kiln.Runtime"],
        ["Kiln.Compiler"] = ["Kiln.Ir", "Kiln.Onnx", "Kiln.Evaluator", "Kiln.Passes", "Kiln.CodeGen", "Kiln.Runtime"],
        ["Kiln.Build"] = ["Kiln.Ir", "Kiln.Onnx", "Kiln.Passes", "Kiln.CodeGen", "Kiln.Compiler", "Kiln.Runtime"],
        ["Kiln.Cli"] = ["Kiln.Ir", "Kiln.Onnx", "Kiln.Evaluator", "Kiln.CodeGen", "Kiln.Compiler"],
    };

    private static IEnumerable<string> References(string csproj) =>
        XDocument.Load(csproj).Descendants("ProjectReference").Select(r => Path.GetFileNameWithoutExtension(r.Attribute("Include")!.Value.Replace('\\', '/')));

    [Fact]
    public void Assemblies_reference_only_their_layers()
    {
        var projects = Directory.GetFiles(Path.Combine(Fixtures.RepoRoot, "src"), "*.csproj", SearchOption.AllDirectories);
        Assert.Equal(Allowed.Keys.Order(StringComparer.Ordinal), projects.Select(Path.GetFileNameWithoutExtension).Order(StringComparer.Ordinal)!);
        var wrong = projects.SelectMany(p => References(p).Where(r => !Allowed[Path.GetFileNameWithoutExtension(p)].Contains(r)).Select(r => $"{Path.GetFileNameWithoutExtension(p)} → {r}")).ToList();
        Assert.True(wrong.Count == 0, "references architecture.md does not allow: " + string.Join(", ", wrong));
    }

    [Fact]
    public void Only_the_CLI_s_tests_reference_the_CLI()
    {
        var tests = Directory.GetFiles(Path.Combine(Fixtures.RepoRoot, "tests"), "*.csproj", SearchOption.AllDirectories)
            .Where(p => Path.GetFileNameWithoutExtension(p) != "Kiln.Cli.Tests" && References(p).Contains("Kiln.Cli")).Select(Path.GetFileNameWithoutExtension).ToList();
        Assert.True(tests.Count == 0, "test projects referencing Kiln.Cli (use Kiln.Compiler): " + string.Join(", ", tests));
    }
}
