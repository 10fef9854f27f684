using Kiln.Ir.Inference;
using Kiln.TestSupport;

namespace Kiln.Ir.Tests;

/// <summary>Runs the .kir files under tests/Kiln.Ir.Tests/ir (see <see cref="KirCheck"/>); RUN steps are <c>infer</c> and <c>verify</c>.</summary>
public sealed class KirFileTests
{
    public static TheoryData<string> Files() => new(KirCheck.Files("tests", "Kiln.Ir.Tests", "ir"));

    [Theory]
    [MemberData(nameof(Files))]
    public void Run(string file)
    {
        var failures = KirCheck.Run(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Ir.Tests", "ir", file), Steps(file));
        Assert.Empty(failures);
    }

    /// <summary>Each file can fail: without its steps (the model only parsed and printed) it fails, and each CHECK-NOT has text to find.</summary>
    [Theory]
    [MemberData(nameof(Files))]
    public void Fails_when_its_steps_do_nothing(string file)
    {
        var problems = KirCheck.ProveCanFail(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Ir.Tests", "ir", file), (_, _) => { }, Steps(file));
        Assert.Empty(problems);
    }

    private static Action<Model, string> Steps(string file) => (model, pipeline) =>
        {
            foreach (var step in pipeline.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                switch (step)
                {
                    case "infer": ShapeInference.Run(model.Graph); break;
                    case "verify": Verifier.Verify(model.Graph); break;
                    default: throw new InvalidOperationException($"{file}: unknown pipeline step '{step}'");
                }
            }
        };
}
