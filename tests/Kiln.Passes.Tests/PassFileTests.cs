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

    /// <summary>
    /// Each file can fail: with the passes of its RUN line turned into no-ops it fails, and each CHECK-NOT's text is
    /// there to be found (files whose pass is meant to change nothing say so with NEGATIVE, and fail under CONTROL).
    /// </summary>
    [Theory]
    [MemberData(nameof(Files))]
    public void Fails_when_its_passes_do_nothing(string file)
    {
        var problems = KirCheck.ProveCanFail(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Passes.Tests", "ir", file),
            (model, pipeline) =>
            {
                var parsed = PassPipeline.Parse(pipeline);
                PassManager.Run(model, parsed, noOps: parsed.Steps.Select(s => s.Name).ToHashSet());
            },
            (model, pipeline) => PassManager.Run(model, pipeline));
        Assert.Empty(problems);
    }
}
