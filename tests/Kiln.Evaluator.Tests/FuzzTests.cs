using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Evaluator.Tests;

/// <summary>
/// A seeded corpus of damaged models (<see cref="DamagedModels"/>) goes through import and evaluation: every file
/// must end in a result or a Kiln diagnostic of bad input — no crash, no hang, no internal error (KILN0099), no other
/// exception. The compiled engine gets the same corpus in Kiln.CodeGen.Tests.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    [Fact]
    public void Damaged_models_end_in_a_result_or_a_diagnostic()
    {
        var outcomes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        var count = 0;
        foreach (var (name, bytes) in DamagedModels.Corpus())
        {
            count++;
            string outcome;
            try
            {
                using var model = OnnxImporter.Import(bytes, name);
                var inputs = DamagedModels.SynthesizeInputs(model.Graph);
                if (inputs is null) outcome = "imported, inputs not synthesizable";
                else
                {
                    var interpreter = new Interpreter(model.Graph, new EvaluatorOptions { MemoryBudget = 512L << 20, TimeLimit = TimeSpan.FromSeconds(10) }, name);
                    interpreter.Run(inputs);
                    outcome = "imported and ran";
                }
            }
            catch (KilnException e)
            {
                outcome = "refused: KILN" + ((int)e.Diagnostics[0].Code).ToString("D4");
                if (e.Diagnostics[0].Code == DiagnosticCode.InternalError) unexpected.Add($"{name}: {e.Message}");
            }
            catch (Exception e)
            {
                outcome = "unexpected exception";
                unexpected.Add($"{name}: {e.GetType().Name}: {e.Message}");
            }
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        }
        foreach (var (k, v) in outcomes) output.WriteLine($"{k}: {v}");
        Assert.Equal(DamagedModels.Count, count);
        Assert.True(unexpected.Count == 0, string.Join("\n", unexpected));
        Assert.True(outcomes.GetValueOrDefault("imported and ran") > 0, "no damaged model ran at all: the corpus is not exercising the evaluator");
    }
}
