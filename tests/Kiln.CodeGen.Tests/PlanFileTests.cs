using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// The memory plan is tested like a pass: each .kir file under tests/Kiln.CodeGen.Tests/ir is compiled with its RUN
/// pipeline, and its CHECK lines are matched against the plan (what <c>kiln dump --plan</c> prints).
/// </summary>
public sealed class PlanFileTests
{
    public static TheoryData<string> Files() => new(KirCheck.Files("tests", "Kiln.CodeGen.Tests", "ir"));

    [Theory]
    [MemberData(nameof(Files))]
    public void Plan(string file)
    {
        var failures = KirCheck.RunOn(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.CodeGen.Tests", "ir", file),
            (model, pipeline) => ModelCompiler.Compile(model, file, new CompileOptions { Passes = pipeline, Verify = false }).Plan);
        Assert.Empty(failures);
    }
}
