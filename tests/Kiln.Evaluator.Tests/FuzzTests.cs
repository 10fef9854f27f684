using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.Evaluator.Tests;

/// <summary>
/// A seeded corpus of damaged models (byte flips, overwritten ranges, truncations of the shared models) goes through
/// import and evaluation: every file must end in a result or a Kiln diagnostic — no crash, no hang, no other exception.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    private static readonly string[] Sources = ["llama-tiny-random/model.onnx", "stories260k/model.onnx", "paddleocr/cls/model.onnx"];

    private static IEnumerable<(string Name, byte[] Bytes)> Corpus()
    {
        var rng = new Random(20261124);
        foreach (var source in Sources)
        {
            var original = File.ReadAllBytes(Fixtures.Model(source));
            for (var i = 0; i < 100; i++)
            {
                var b = (byte[])original.Clone();
                string kind;
                switch (i % 5)
                {
                    case 0: case 1: case 2:
                        var flips = new[] { 1, 4, 16 }[i % 3];
                        kind = $"flip{flips}";
                        for (var k = 0; k < flips; k++) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
                        break;
                    case 3:
                        kind = "overwrite";
                        var at = rng.Next(b.Length);
                        var len = Math.Min(b.Length - at, rng.Next(1, 256));
                        rng.NextBytes(b.AsSpan(at, len));
                        break;
                    default:
                        kind = "truncate";
                        b = b[..rng.Next(b.Length)];
                        break;
                }
                yield return ($"{source}#{i}:{kind}", b);
            }
        }
    }

    /// <summary>Inputs for whatever the damaged graph now declares: zeros, symbolic dims 1 (past 0).</summary>
    private static Dictionary<string, object?>? SynthesizeInputs(Graph g)
    {
        var inputs = new Dictionary<string, object?>();
        foreach (var v in g.Inputs)
        {
            if (v.Type is not TensorType { Shape: { } shape } tt) return null;
            var dims = shape.Dims.Select(d => d.Value ?? (d.SymbolName is { } s && s.StartsWith("past", StringComparison.Ordinal) ? 0 : 1)).ToArray();
            if (dims.Any(d => d < 0 || d > 4096) || dims.Aggregate(1L, (a, d) => a * d) > 1 << 22) return null;
            if (tt.Elem is ElementType.String or ElementType.I4 or ElementType.U4 or ElementType.C64 or ElementType.C128) return null;
            inputs[v.Name] = Tensor.Zeros(tt.Elem.ToRuntime(), dims.Select(d => (int)d).ToArray());
        }
        return inputs;
    }

    [Fact]
    public void Damaged_models_end_in_a_result_or_a_diagnostic()
    {
        var outcomes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        var count = 0;
        foreach (var (name, bytes) in Corpus())
        {
            count++;
            string outcome;
            try
            {
                using var model = OnnxImporter.Import(bytes, name);
                var inputs = SynthesizeInputs(model.Graph);
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
        Assert.Equal(300, count);
        Assert.True(unexpected.Count == 0, string.Join("\n", unexpected));
        Assert.True(outcomes.GetValueOrDefault("imported and ran") > 0, "no damaged model ran at all: the corpus is not exercising the evaluator");
    }
}
