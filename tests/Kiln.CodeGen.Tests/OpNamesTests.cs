using System.Text.RegularExpressions;
using Kiln.Ir.Ops;
using Kiln.Runtime.Operators;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// Planning and the class writer know ops only through registry traits (a new op joins planning by declaring one),
/// and kiln-domain op names are written once, as the <see cref="KilnOp"/> constants.
/// </summary>
public sealed class OpNamesTests
{
    private static readonly string Src = Path.Combine(Fixtures.RepoRoot, "src");

    private static IEnumerable<string> SourceFiles(string folder, string pattern = "*.cs") =>
        Directory.EnumerateFiles(Path.Combine(Src, folder), pattern, SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"));

    /// <summary>Each (file, line, name) where a string literal is an op name of the registry.</summary>
    private static List<string> OpNameLiterals(IEnumerable<string> files, Func<OpDef, bool> which)
    {
        var names = OpRegistry.Default.All.Where(which).SelectMany(d => new[] { d.Name, d.Domain.Length == 0 ? d.Name : d.Domain + ":" + d.Name }).ToHashSet(StringComparer.Ordinal);
        var found = new List<string>();
        foreach (var file in files)
        {
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
                foreach (Match m in Regex.Matches(lines[i], "\"([A-Za-z:]+)\""))
                    if (names.Contains(m.Groups[1].Value))
                        found.Add($"{Path.GetRelativePath(Src, file)}:{i + 1}: {m.Value}");
        }
        return found;
    }

    [Fact]
    public void Planning_and_the_class_writer_name_no_op()
    {
        var files = SourceFiles(Path.Combine("Kiln.CodeGen", "Planning")).Concat(SourceFiles("Kiln.CodeGen", "ModelEmitter*.cs")).ToList();
        Assert.True(files.Count >= 6, "the planning and class writer files were not found");
        var literals = OpNameLiterals(files, _ => true);
        Assert.True(literals.Count == 0, "op names in planning or the class writer (declare a trait in the registry instead):\n" + string.Join("\n", literals));
        var constants = files.SelectMany(f => File.ReadAllLines(f).Select((l, i) => (l, i, f))).Where(x => x.l.Contains("KilnOp.", StringComparison.Ordinal))
            .Select(x => $"{Path.GetRelativePath(Src, x.f)}:{x.i + 1}").ToList();
        Assert.True(constants.Count == 0, "kiln op constants in planning or the class writer:\n" + string.Join("\n", constants));
    }

    [Fact]
    public void Kiln_domain_op_names_are_written_only_as_the_registry_constants()
    {
        var files = SourceFiles("").Where(f => Path.GetFileName(f) != "KilnOp.cs").ToList();
        var literals = OpNameLiterals(files, d => d.Domain == KilnOp.Domain);
        Assert.True(literals.Count == 0, "kiln op names outside KilnOp (use the constant):\n" + string.Join("\n", literals));
    }
}
