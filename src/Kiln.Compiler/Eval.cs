using System.Globalization;
using System.Text.Json;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Passes;
using Kiln.Runtime;

namespace Kiln.Compiler;

/// <summary>What <c>kiln eval</c> measured: the float model against the compressed one on the same tokens.</summary>
public sealed record EvalResult(double PplFloat, double Ppl, double KldMean, double KldP99, double Top1, double BitsPerWeight,
    long WeightBytes, long WeightBytesFloat, long Parameters, int Tokens, string Passes)
{
    public string ToJson() => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["ppl_float"] = PplFloat, ["ppl"] = Ppl, ["kld_mean"] = KldMean, ["kld_p99"] = KldP99, ["top1"] = Top1,
        ["bits_per_weight"] = BitsPerWeight, ["weight_bytes"] = WeightBytes, ["weight_bytes_float"] = WeightBytesFloat,
        ["parameters"] = Parameters, ["tokens"] = Tokens, ["passes"] = Passes,
    });
}

/// <summary>
/// <c>kiln eval MODEL --passes P --tokens FILE</c>: runs the float model and the compressed one (the same pipeline
/// with the compression passes) on the rows of a token file and compares their next-token distributions at every
/// position but the last: perplexity of each on the file's own next tokens, KL(float ‖ compressed) (mean and 99th
/// percentile), and how often their top-1 tokens agree. Both run on the reference evaluator, which dispatches to the
/// kernels the compiled code calls (quantized products quantize their activations on the fly there too).
/// </summary>
public static class Eval
{
    public const int RowsPerBatch = 8;

    public static EvalResult Run(string modelPath, string passes, string tokensPath, string? calibrationPath, Action<string>? progress)
    {
        using var reference = OnnxImporter.Import(modelPath);
        using var compressed = OnnxImporter.Import(modelPath);
        // Inputs are checked before any pass runs: a wrong file is the user's to fix, and should cost no compression time.
        var logitsName = CheckInputs(reference.Graph, modelPath, tokensPath);
        // Parameters as the exporter wrote them, before fold can materialize a copy (a tied classifier's Transpose(E)):
        // a table read by both the lookup and the classifier counts once.
        var parameters = reference.Graph.AllGraphs().SelectMany(g => g.Constants).Where(c => c.Data is { Elem: DType.F32 or DType.F16 or DType.BF16 }).Sum(c => c.Data!.ElementCount);
        // The float model runs through the default pipeline, so the comparison isolates what compression changed.
        PassManager.Run(reference, PassPipeline.Parse(PassPipeline.Default));
        var calibration = CalibrationInputs.Load(calibrationPath, compressed.Graph);
        var pipeline = PassPipeline.Parse(passes);
        var reports = PassManager.Run(compressed, pipeline, r => progress?.Invoke($"{r.Step}: {r.NodesBefore} → {r.NodesAfter} nodes"), progress, calibration);
        CalibrationInputs.NoteUnused(calibrationPath, reports, pipeline.ToString());
        var batches = CalibrationFiles.Load(tokensPath, reference.Graph, RowsPerBatch);
        var tokensInput = batches[0].Keys.Single();
        var floatRun = new Interpreter(reference.Graph, new EvaluatorOptions(), modelPath);
        var quantRun = new Interpreter(compressed.Graph, new EvaluatorOptions(), modelPath);
        var floatSet = new CalibrationSet(tokensPath, batches);
        double nllFloat = 0, nllQuant = 0, agree = 0;
        var klds = new List<double>();
        for (var b = 0; b < batches.Count; b++)
        {
            progress?.Invoke($"batch {b + 1}/{batches.Count}");
            var ids = batches[b][tokensInput].ToArray<long>();
            var (rows, length) = ((int)batches[b][tokensInput].Dims[0], (int)batches[b][tokensInput].Dims[1]);
            var p = Logits(floatRun, floatSet.Feeds(reference.Graph, b), logitsName);
            var q = Logits(quantRun, floatSet.Feeds(compressed.Graph, b), logitsName);
            var vocab = p.Shape[^1];
            var ps = p.Span<float>();
            var qs = q.Span<float>();
            var lp = new double[vocab];
            var lq = new double[vocab];
            for (var r = 0; r < rows; r++)
                for (var t = 0; t + 1 < length; t++)
                {
                    var at = ((long)r * length + t) * vocab;
                    OutputDivergence.LogSoftmax(ps.Slice((int)at, vocab), lp);
                    OutputDivergence.LogSoftmax(qs.Slice((int)at, vocab), lq);
                    var next = (int)ids[r * length + t + 1];
                    nllFloat -= lp[next];
                    nllQuant -= lq[next];
                    double kld = 0;
                    for (var v = 0; v < vocab; v++) kld += Math.Exp(lp[v]) * (lp[v] - lq[v]);
                    klds.Add(Math.Max(0, kld));
                    if (ArgMax(lp) == ArgMax(lq)) agree++;
                }
        }
        var n = klds.Count;
        klds.Sort();
        var floatBytes = WeightBytes(reference.Graph);
        var bytes = WeightBytes(compressed.Graph);
        return new EvalResult(Math.Exp(nllFloat / n), Math.Exp(nllQuant / n), klds.Average(), klds[Math.Min(n - 1, (int)Math.Ceiling(0.99 * n) - 1)], agree / n,
            parameters == 0 ? 0 : bytes * 8.0 / parameters, bytes, floatBytes, parameters, n, passes);
    }

    private static long WeightBytes(Graph g) => g.AllGraphs().SelectMany(x => x.Constants).Sum(c => c.Data?.ByteLength ?? 0);

    private static Tensor Logits(Interpreter run, Dictionary<Value, object?> feeds, string name)
    {
        var outputs = run.Run(feeds.ToDictionary(f => f.Key.Name, f => f.Value));
        return outputs[name] as Tensor ?? throw new InvalidOperationException($"output '{name}' is not a tensor");
    }

    /// <summary>
    /// The model must give next-token logits (its <c>logits</c> output, else its first: a float tensor [batch, seq,
    /// vocab]) and the token file must be int64 [rows, tokens] with at least 2 tokens a row (one position is scored
    /// per next token) and ids below the vocabulary. Returns the logits output's name. Refusals are KILN0021.
    /// </summary>
    private static string CheckInputs(Graph graph, string modelPath, string tokensPath)
    {
        static KilnException Bad(string what, string file) => new(new Diagnostic(DiagnosticCode.InputMismatch, what, file));
        if (graph.Outputs.Count == 0) throw Bad("the model has no outputs: eval needs next-token logits", modelPath);
        var logits = graph.Outputs.FirstOrDefault(o => o.Name == "logits") ?? graph.Outputs[0];
        if (logits.Value.Type is not TensorType { Elem: DType.F32 or DType.F16 or DType.BF16 or DType.F64, Shape: var shape } || shape is { Rank: not 3 })
            throw Bad($"output '{logits.Name}' is {logits.Value.Type}, not next-token logits (a float tensor [batch, seq, vocab])", modelPath);
        if (!File.Exists(tokensPath)) throw new KilnException(new Diagnostic(DiagnosticCode.FileNotReadable, "the token file does not exist", tokensPath));
        if (DataFile.Read(tokensPath) is not TensorValue { Data: { Elem: DType.I64, Dims: [var rows, var length] } tokens })
            throw Bad("a token file holds one int64 [rows, tokens] tensor", tokensPath);
        if (rows < 1 || length < 2) throw Bad($"holds [{rows}, {length}] tokens: eval needs at least one row of at least 2 tokens (each position is scored on the next token)", tokensPath);
        var vocab = shape?[2].Value;
        var ids = tokens.ToArray<long>();
        for (var i = 0; i < ids.Length; i++)
            if (ids[i] < 0 || ids[i] >= (vocab ?? long.MaxValue))
                throw Bad($"token {ids[i]} at row {i / length}, position {i % length} is outside the model's vocabulary of {vocab}", tokensPath);
        return logits.Name;
    }

    private static int ArgMax(double[] x)
    {
        var best = 0;
        for (var i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    public static void Print(EvalResult r, TextWriter o)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine($"passes: {r.Passes}");
        o.WriteLine($"tokens scored: {r.Tokens}");
        o.WriteLine($"perplexity: float {r.PplFloat.ToString("0.0000", inv)}, compressed {r.Ppl.ToString("0.0000", inv)} ({((r.Ppl / r.PplFloat - 1) * 100).ToString("+0.00;-0.00", inv)}%)");
        o.WriteLine($"KL divergence (float ‖ compressed): mean {r.KldMean.ToString("0.000000", inv)}, p99 {r.KldP99.ToString("0.000000", inv)}");
        o.WriteLine($"top-1 agreement: {(r.Top1 * 100).ToString("0.00", inv)}%");
        o.WriteLine($"weights: {r.WeightBytes.ToString("N0", inv)} bytes ({r.BitsPerWeight.ToString("0.00", inv)} bits per parameter), float {r.WeightBytesFloat.ToString("N0", inv)} bytes, {r.Parameters.ToString("N0", inv)} parameters");
    }
}
