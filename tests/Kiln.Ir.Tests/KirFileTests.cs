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
        var failures = KirCheck.Run(Path.Combine(Fixtures.RepoRoot, "tests", "Kiln.Ir.Tests", "ir", file), (model, pipeline) =>
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
        });
        Assert.Empty(failures);
    }
}
