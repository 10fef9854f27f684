using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Runtime;

namespace Kiln.TestSupport;

/// <summary>
/// A seeded corpus of damaged models (byte flips, overwritten ranges, truncations of the shared models), for the
/// fuzz tests of the evaluator and of compiled code: each must end in a result or a Kiln diagnostic.
/// </summary>
public static class DamagedModels
{
    private static readonly string[] Sources = ["llama-tiny-random/model.onnx", "stories260k/model.onnx", "paddleocr/cls/model.onnx"];

    public const int Count = 300;

    public static IEnumerable<(string Name, byte[] Bytes)> Corpus()
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

    /// <summary>Inputs for whatever the damaged graph now declares: zeros, symbolic dims 1 (past 0); null when that is not possible.</summary>
    public static Dictionary<string, object?>? SynthesizeInputs(Graph g)
    {
        var inputs = new Dictionary<string, object?>();
        foreach (var v in g.Inputs)
        {
            if (v.Type is not TensorType { Shape: { } shape } tt) return null;
            var dims = shape.Dims.Select(d => d.Value ?? (d.SymbolName is { } s && s.StartsWith("past", StringComparison.Ordinal) ? 0 : 1)).ToArray();
            if (dims.Any(d => d < 0 || d > 4096) || dims.Aggregate(1L, (a, d) => a * d) > 1 << 22) return null;
            if (tt.Elem is DType.String or DType.I4 or DType.U4 or DType.C64 or DType.C128) return null;
            inputs[v.Name] = Tensor.Zeros(tt.Elem.ToRuntime(), dims.Select(d => (int)d).ToArray());
        }
        return inputs;
    }
}
