using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Kiln.CodeGen;
using Kiln.CodeGen.Backends;
using Kiln.Ir;
using Kiln.Passes;

namespace Kiln.Compiler;

public sealed record CompileOptions
{
    /// <summary>The pass pipeline; null runs <see cref="PassPipeline.Default"/>.</summary>
    public string? Passes { get; init; }

    public string Namespace { get; init; } = "Kiln.Models";

    /// <summary>The generated class's name; null derives it from the model's file name (or its folder for model.onnx).</summary>
    public string? ClassName { get; init; }

    /// <summary>Compile the generated code with Roslyn to check it builds without warnings.</summary>
    public bool Verify { get; init; } = true;

    public ICodeBackend Backend { get; init; } = new CpuBackend();

    /// <summary>Receives a line per compile step (each pass with its node counts, emission, verification): build progress.</summary>
    public Action<string>? Progress { get; init; }

    /// <summary>
    /// When set, the IR is written to this folder after import (<c>00-import.kir</c>) and after each pass
    /// (<c>NN-pass.kir</c>), each readable by <c>kiln dump</c>; earlier dumps there are removed first.
    /// </summary>
    public string? DumpIrDirectory { get; init; }

    /// <summary>Inputs for the calibrating passes (quantize{method=gptq|awq}); load them with <c>Kiln.Onnx.CalibrationFiles</c>.</summary>
    public CalibrationSet? Calibration { get; init; }
}

/// <summary>A compiled model: the C# source, the weights for the blob, and what happened on the way.</summary>
public sealed record CompileResult(string ClassName, string Namespace, string Source, IReadOnlyList<BlobTensor> Weights, string ModelHash,
    string Pipeline, IReadOnlyList<PassReport> Passes, int NodesBefore, int NodesAfter, long WeightBytes, double Milliseconds, string Activations, bool FullyPlanned)
{
    /// <summary>The memory plan of the generated code as text (<c>kiln dump --plan</c>).</summary>
    public string Plan { get; init; } = "";

    /// <summary>Nodes run through a generic operator entry instead of a planned kernel (0 when fully planned).</summary>
    public int GenericCalls { get; init; }

    public string FullName => Namespace + "." + ClassName;
}

/// <summary>Import → passes → emit: the compiler's driver, shared by <c>kiln compile</c>, <c>kiln run --engine compiled</c> and the build task.</summary>
public static class ModelCompiler
{
    public static string DefaultClassName(string modelPath)
    {
        var stem = Path.GetFileNameWithoutExtension(modelPath);
        var folder = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(modelPath)) ?? "");
        return CSharp.TypeName(stem is "model" && folder.Length > 0 ? folder : stem);
    }

    /// <summary>
    /// Refuses a class or namespace the generated code could not declare (KILN0028 at <paramref name="file"/>), before
    /// any work: one error naming it, not hundreds from the C# compiler.
    /// </summary>
    public static void CheckNames(string ns, string className, string file)
    {
        var diagnostics = new List<Ir.Diagnostics.Diagnostic>();
        if (CSharp.ClassNameProblem(className) is { } c)
            diagnostics.Add(new(Ir.Diagnostics.DiagnosticCode.InvalidName, $"class name '{className}' cannot be used: {c}", file));
        if (CSharp.NamespaceProblem(ns) is { } n)
            diagnostics.Add(new(Ir.Diagnostics.DiagnosticCode.InvalidName, $"namespace '{ns}' cannot be used: {n}", file));
        if (diagnostics.Count > 0) throw new Ir.Diagnostics.KilnException(diagnostics);
    }

    /// <summary>Runs the pipeline on <paramref name="model"/> (in place) and emits its class.</summary>
    public static CompileResult Compile(Model model, string sourceName, CompileOptions options)
    {
        var clock = Stopwatch.StartNew();
        CheckNames(options.Namespace, options.ClassName ?? DefaultClassName(sourceName), sourceName);
        RefuseOversizedWeights(model, sourceName);
        var before = model.Graph.AllGraphs().Sum(g => g.Nodes.Count);
        var pipeline = PassPipeline.Parse(options.Passes ?? PassPipeline.Default);
        var dumps = options.DumpIrDirectory;
        if (dumps is not null)
        {
            Directory.CreateDirectory(dumps);
            foreach (var old in Directory.EnumerateFiles(dumps, "*.kir*")) File.Delete(old);
            KirPrinter.WriteFile(model, Path.Combine(dumps, "00-import.kir"));
        }
        var steps = pipeline.Steps.Count;
        var done = 0;
        // Weights the passes produce are spilled to mapped scratch files, owned by the model (its blob is written
        // from them after this returns): a compile holds about one layer in memory, not the whole compressed model.
        var spill = new WeightSpill(Path.Combine(Path.GetTempPath(), $"kiln-spill-{Environment.ProcessId}-{Guid.NewGuid():N}"));
        model.Resources.Add(spill);
        var reports = PassManager.Run(model, pipeline, r =>
        {
            var index = ++done;
            options.Progress?.Invoke($"pass {index}/{steps} {r.Step}: {r.NodesBefore} → {r.NodesAfter} nodes ({r.Milliseconds.ToString("0", CultureInfo.InvariantCulture)} ms)");
            if (dumps is not null) KirPrinter.WriteFile(model, Path.Combine(dumps, $"{index:D2}-{DumpName(r.Step)}.kir"));
        }, options.Progress is null ? null : line => options.Progress($"  {line}"), options.Calibration, spill);
        var after = model.Graph.AllGraphs().Sum(g => g.Nodes.Count);
        var className = options.ClassName ?? DefaultClassName(sourceName);
        var hash = ModelHash(model, options.Namespace, className, pipeline.ToString(), options.Backend.Name);
        options.Progress?.Invoke($"emitting {options.Namespace}.{className} ({after} nodes)");
        var emitted = new ModelEmitter(model.Graph, new EmitOptions(options.Namespace, className, hash, Path.GetFileName(sourceName), pipeline.ToString()), options.Backend).Emit();
        var source = RoslynBuild.Format(emitted.Source);
        if (options.Verify)
        {
            options.Progress?.Invoke("checking that the generated code builds (Roslyn)");
            RoslynBuild.Compile(className, [(className + ".cs", source)]);
        }
        return new CompileResult(className, options.Namespace, source, emitted.Weights, hash, pipeline.ToString(), reports, before, after,
            emitted.Weights.Sum(w => w.Data.ByteLength), clock.Elapsed.TotalMilliseconds, emitted.Activations, emitted.FullyPlanned) { Plan = emitted.Plan, GenericCalls = emitted.GenericCalls };
    }

    /// <summary>
    /// A weight of more than 2 GiB cannot be one tensor view of the runtime (its kernels take spans): refused before
    /// any pass reads it, naming it (a model may still be larger than 2 GiB in all; its blob takes 64-bit offsets).
    /// </summary>
    private static void RefuseOversizedWeights(Model model, string sourceName)
    {
        var diagnostics = model.Graph.AllGraphs().SelectMany(g => g.Constants)
            .Where(c => c.Data is { } d && d.ByteLength > int.MaxValue)
            .Select(c => new Ir.Diagnostics.Diagnostic(Ir.Diagnostics.DiagnosticCode.CodeGenFailed,
                $"weight '{c.Name}' ({c.Data!.Elem.Name()}[{string.Join(", ", c.Data.Dims)}]) holds {c.Data.ByteLength:N0} bytes; one tensor can hold at most {int.MaxValue:N0} (split it)", sourceName))
            .ToList();
        if (diagnostics.Count > 0) throw new Ir.Diagnostics.KilnException(diagnostics);
    }

    /// <summary>A pass step as a file-name part: its name, options dropped ("quantize{bits=4}" → "quantize").</summary>
    private static string DumpName(string step)
    {
        var brace = step.IndexOf('{');
        var name = (brace < 0 ? step : step[..brace]).Trim();
        return string.Concat(name.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' ? c : '_'));
    }

    /// <summary>
    /// SHA-256 over what determines the generated code and blob: the optimized IR as text (weights by content hash),
    /// the pipeline, the backend and the names. The blob carries it and the code checks it, so a stale blob is refused.
    /// </summary>
    private static string ModelHash(Model model, string ns, string cls, string pipeline, string backend)
    {
        var text = $"kiln-codegen/1\n{backend}\n{ns}.{cls}\n{pipeline}\n{KirPrinter.Print(model)}";
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>Writes CLASS.cs, CLASS.kiln and CLASS.report.md into <paramref name="dir"/>; returns their paths.</summary>
    public static IReadOnlyList<string> WriteFiles(CompileResult r, string dir)
    {
        Directory.CreateDirectory(dir);
        var cs = Path.Combine(dir, r.ClassName + ".cs");
        var blob = Path.Combine(dir, r.ClassName + ".kiln");
        var report = Path.Combine(dir, r.ClassName + ".report.md");
        File.WriteAllText(cs, r.Source);
        var blobBytes = WeightBlobWriter.Write(blob, r.Weights, r.ModelHash);
        File.WriteAllText(report, Report(r, blobBytes));
        return [cs, blob, report];
    }

    public static string Report(CompileResult r, long blobBytes)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(inv, $"# Compile report: {r.FullName}\n\n");
        sb.Append(inv, $"- pipeline: `{r.Pipeline}`\n");
        sb.Append(inv, $"- nodes: {r.NodesBefore} before passes, {r.NodesAfter} after\n");
        sb.Append(inv, $"- weights: {r.Weights.Count} tensors, {r.WeightBytes.ToString("N0", inv)} bytes ({blobBytes.ToString("N0", inv)} bytes of blob with header, table and alignment)\n");
        sb.Append(inv, $"- activations: {r.Activations}\n");
        sb.Append(inv, $"- generic operator calls: {r.GenericCalls}\n");
        foreach (var summary in r.Plan.Split('\n').Where(l => l.Length > 0 && !l.StartsWith(' ')))
            sb.Append(inv, $"- plan, {summary} (`kiln dump MODEL --plan` lists every value)\n");
        // Every node run through its operator entry inside planned code (op, node, why), once though both entries run it.
        foreach (var call in r.Plan.Split('\n').Where(l => l.StartsWith("  generic operator call: ", StringComparison.Ordinal)).Distinct())
            sb.Append(inv, $"- generic operator call: {call["  generic operator call: ".Length..]}\n");
        sb.Append(inv, $"- model hash: {r.ModelHash}\n");
        sb.Append(inv, $"- time: {r.Milliseconds.ToString("0", inv)} ms\n\n");
        sb.Append("## Passes\n\n| step | nodes before | nodes after | ms | what it did | ops added/removed |\n| --- | --- | --- | --- | --- | --- |\n");
        foreach (var p in r.Passes)
        {
            var did = string.Join(", ", p.Counts.Select(c => $"{c.Key} {c.Value}").Concat(p.Notes));
            var ops = string.Join(", ", p.OpDelta.Select(d => $"{d.Key} {(d.Value > 0 ? "+" : "")}{d.Value}"));
            sb.Append(inv, $"| `{p.Step}` | {p.NodesBefore} | {p.NodesAfter} | {p.Milliseconds.ToString("0.0", inv)} | {(did.Length == 0 ? "nothing" : did)} | {ops} |\n");
        }
        foreach (var p in r.Passes.Where(p => p.Layers.Count > 0))
        {
            long bytes = p.Layers.Sum(l => l.Bytes), before = p.Layers.Sum(l => l.FloatBytes);
            string E(double? e) => e is { } v ? v.ToString("0.####", inv) : "–";
            if (p.Layers.Any(l => l.OutputErrorBefore is not null))
            {
                // A refit (reconstruct): the same layers, their errors against the teacher before and after.
                sb.Append(inv, $"\n## Layers re-fitted by `{p.Step}`\n\n");
                sb.Append("Output errors are relative Frobenius norms of the layer's output against the teacher's (fed the teacher's inputs), on the calibration tokens, ");
                sb.Append("before and after the refit; the change is that of the refit parameters (relative).\n\n");
                sb.Append("| weight | what was refit | bytes | output error before | output error after | parameter change | note |\n| --- | --- | --- | --- | --- | --- | --- |\n");
                foreach (var l in p.Layers)
                    sb.Append(inv, $"| `{l.Weight}` | {l.Format} | {l.Bytes.ToString("N0", inv)} | {E(l.OutputErrorBefore)} | {E(l.OutputError)} | {l.WeightError.ToString("0.####", inv)} | {l.Note?.TrimEnd(' ', ';')} |\n");
                continue;
            }
            var ranks = p.Layers.Any(l => l.Rank is not null);
            sb.Append(inv, $"\n## Layers compressed by `{p.Step}`\n\n");
            sb.Append(inv, $"{p.Layers.Count} layers: {bytes.ToString("N0", inv)} bytes (f32 {before.ToString("N0", inv)}), {(bytes * 32.0 / Math.Max(1, before)).ToString("0.###", inv)} bits per weight overall. ");
            sb.Append("Errors are relative Frobenius norms: of the weight, and of the layer's output on the calibration inputs (when the pass had them).\n\n");
            sb.Append("| weight | format |" + (ranks ? " rank | parameters kept |" : "") + " bits/weight | bytes | f32 bytes | weight error | output error | note |\n");
            sb.Append("| --- | --- |" + (ranks ? " --- | --- |" : "") + " --- | --- | --- | --- | --- | --- |\n");
            foreach (var l in p.Layers)
            {
                var rank = !ranks ? "" : l.Rank is { } k
                    ? FormattableString.Invariant($" {k} | {l.ParametersKept:N0} of {l.Parameters:N0} ({(double)l.ParametersKept!.Value / l.Parameters!.Value:P1}) |")
                    : " – | all |";
                sb.Append(inv, $"| `{l.Weight}` | {l.Format} |{rank} {l.BitsPerWeight.ToString("0.###", inv)} | {l.Bytes.ToString("N0", inv)} | {l.FloatBytes.ToString("N0", inv)} | {l.WeightError.ToString("0.####", inv)} | {E(l.OutputError)} | {l.Note?.TrimEnd(' ', ';')} |\n");
            }
        }
        return sb.ToString();
    }
}
