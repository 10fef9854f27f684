using Kiln.TestSupport;

namespace Kiln.Passes.Tests;

/// <summary>Runs the .kir files under tests/Kiln.Passes.Tests/ir: each RUN line is a pass pipeline (see docs/pipelines.md).</summary>
public sealed class PassFileTests
{
    public static TheoryData<string> Files() => new(KirCheck.Files("tests", "Kiln.Passes.Tests", "ir"));

    [Theory]
    [MemberData(nameof(Files))]
    public void Run(string file)
    {
        var failures = KirCheck.Run(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Passes.Tests", "ir", file),
            (model, pipeline) => PassManager.Run(model, pipeline));
        Assert.Empty(failures);
    }
}
