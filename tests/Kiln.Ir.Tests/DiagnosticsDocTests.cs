using System.Text.RegularExpressions;
using Kiln.Ir.Diagnostics;
using Kiln.TestSupport;

namespace Kiln.Ir.Tests;

public sealed class DiagnosticsDocTests
{
    /// <summary>docs/diagnostics.md lists exactly the codes of <see cref="DiagnosticCode"/>.</summary>
    [Fact]
    public void TableMatchesCodes()
    {
        var doc = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "docs", "diagnostics.md"));
        var rows = Regex.Matches(doc, @"^\| KILN(\d{4}) \| (\w+) \|", RegexOptions.Multiline)
            .Select(m => (Code: int.Parse(m.Groups[1].Value), Name: m.Groups[2].Value)).ToList();
        var codes = Enum.GetValues<DiagnosticCode>().Select(c => ((int)c, c.ToString())).ToList();
        Assert.Equal(codes, rows);
    }
}
