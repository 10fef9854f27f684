using Kiln.TestSupport;

namespace Kiln.Build.Tests;

/// <summary>The OCR example, built from the repository with its two &lt;KilnModel&gt; CNNs: boxes, orientations and the annotated PNG.</summary>
[Collection("dotnet builds")]
public sealed class OcrExampleTests
{
    [Fact]
    public void The_OCR_example_finds_the_three_lines_and_the_upside_down_one()
    {
        var example = Path.Combine(Fixtures.RepoRoot, "examples", "ocr");
        var (code, log) = DotnetProcess.Run($"build {example} -nodeReuse:false", Fixtures.RepoRoot);
        Assert.True(code == 0, log);
        var annotated = Path.Combine(Path.GetTempPath(), $"kiln-ocr-{Guid.NewGuid():N}.png");
        try
        {
            (code, log) = DotnetProcess.Run($"{Path.Combine(example, "bin", "Debug", "net10.0", "Ocr.dll")} {Path.Combine(example, "sample.png")} --out {annotated}", Fixtures.RepoRoot);
            Assert.True(code == 0, log);
            Assert.Contains("3 text boxes", log);
            var orientations = log.Split('\n').Where(l => l.TrimStart().StartsWith("box ", StringComparison.Ordinal))
                .Select(l => l[(l.IndexOf("orientation ", StringComparison.Ordinal) + 12)..].Split('°')[0]).ToArray();
            Assert.Equal(["0", "180", "0"], orientations);
            var png = File.ReadAllBytes(annotated);
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        }
        finally
        {
            File.Delete(annotated);
        }
    }
}
