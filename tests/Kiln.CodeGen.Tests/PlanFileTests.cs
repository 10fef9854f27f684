using Kiln.Compiler;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// Planning and emission are tested like passes: each .kir file under tests/Kiln.CodeGen.Tests/ir is compiled with its
/// RUN pipeline, and its CHECK lines are matched against the plan (plan-*.kir: what <c>kiln dump --plan</c> prints)
/// or the generated C# (emit-*.kir).
/// </summary>
public sealed class PlanFileTests
{
    public static TheoryData<string> Files() => new(KirCheck.Files("tests", "Kiln.CodeGen.Tests", "ir"));

    [Theory]
    [MemberData(nameof(Files))]
    public void Plan_or_emit(string file)
    {
        var failures = KirCheck.RunOn(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.CodeGen.Tests", "ir", file),
            (model, pipeline) =>
            {
                var result = ModelCompiler.Compile(model, file, new CompileOptions { Passes = pipeline, Verify = false });
                return file.StartsWith("emit-", StringComparison.Ordinal) ? result.Source : result.Plan;
            });
        Assert.Empty(failures);
    }
}
