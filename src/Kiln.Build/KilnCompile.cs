using Kiln.CodeGen;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using Kiln.Compiler;

namespace Kiln.Build;

/// <summary>
/// Compiles one <c>&lt;KilnModel&gt;</c>: imports the ONNX file, runs the pass pipeline, and writes the generated
/// class, its weight blob and the compile report into <see cref="OutputDirectory"/> (plus IR dumps when asked).
/// Diagnostics become MSBuild errors with their KILN code, located at the model file as the project names it.
/// The targets run it through MSBuild's task host (a process that ends with the build), so no long-lived MSBuild
/// node keeps this assembly or the compiler loaded.
/// </summary>
public sealed class KilnCompile : Microsoft.Build.Utilities.Task
{
    /// <summary>The model as the project names it (diagnostics are located here).</summary>
    [Required] public string Model { get; set; } = "";

    [Required] public string OutputDirectory { get; set; } = "";

    [Required] public string ClassName { get; set; } = "";

    [Required] public string Namespace { get; set; } = "";

    /// <summary>The pass pipeline; empty runs the default one.</summary>
    public string? Passes { get; set; }

    public bool DumpIR { get; set; }

    /// <summary>Refuse blobs that cannot be embedded as a resource (above 2 GB).</summary>
    public bool EmbedWeights { get; set; }

    /// <summary>Calibration inputs for quantize{method=gptq|awq}: a folder of input_N.pb sets or a token file (int64 [rows, tokens]).</summary>
    public string? CalibrationData { get; set; }

    /// <summary>Where to list the files the model read besides itself (external data), for the next build's up-to-date check.</summary>
    public string? InputsFile { get; set; }

    public override bool Execute()
    {
        var written = new List<string>();
        try
        {
            if (!File.Exists(Model)) throw new KilnException(DiagnosticCode.FileNotReadable, "the model file does not exist", Model);
            Log.LogMessage(MessageImportance.High, $"Kiln: compiling {Model} → {Namespace}.{ClassName}");
            using var model = OnnxImporter.Import(Model);
            var full = Path.GetFullPath(Model);
            var externalData = model.Resources.OfType<Runtime.MappedFile>().Select(f => Path.GetFullPath(f.Path))
                .Where(p => p != full).ToList();
            Kiln.Passes.CalibrationSet? calibration = null;
            if (!string.IsNullOrWhiteSpace(CalibrationData))
            {
                calibration = new Kiln.Passes.CalibrationSet(CalibrationData, CalibrationFiles.Load(CalibrationData, model.Graph, Kiln.Passes.CalibrationSet.RowsPerSample));
                // The calibration files are inputs of the compile: changing one recompiles the model.
                externalData.AddRange(File.Exists(CalibrationData) ? [Path.GetFullPath(CalibrationData)]
                    : Directory.EnumerateFiles(CalibrationData, "input_*.pb", SearchOption.AllDirectories).Select(Path.GetFullPath));
            }
            externalData = externalData.Distinct().Order(StringComparer.Ordinal).ToList();
            var result = ModelCompiler.Compile(model, Model, new CompileOptions
            {
                Passes = string.IsNullOrWhiteSpace(Passes) ? null : Passes,
                Namespace = Namespace,
                ClassName = ClassName,
                // The app's own compile builds the generated file; checking it with Roslyn here would build it twice.
                Verify = false,
                DumpIrDirectory = DumpIR ? Path.Combine(OutputDirectory, "ir") : null,
                Calibration = calibration,
                Progress = line => Log.LogMessage(MessageImportance.Normal, $"Kiln: {Path.GetFileName(Model)}: {line}"),
            });
            written.AddRange(ModelCompiler.WriteFiles(result, OutputDirectory));
            var blob = new FileInfo(Path.Combine(OutputDirectory, result.ClassName + ".kiln"));
            if (EmbedWeights && blob.Length > int.MaxValue)
                throw new KilnException(DiagnosticCode.InvalidWeightBlob,
                    $"the weight blob is {blob.Length:N0} bytes; a resource holds at most 2 GB: set EmbedWeights=\"false\" to ship it next to the app", Model);
            if (InputsFile is not null) File.WriteAllLines(InputsFile, externalData);
            Log.LogMessage(MessageImportance.High,
                $"Kiln: {Model}: {result.NodesBefore} → {result.NodesAfter} nodes, {result.WeightBytes:N0} weight bytes, {result.Milliseconds / 1000:0.0} s");
            return true;
        }
        catch (KilnException e)
        {
            foreach (var d in e.Diagnostics) Report(d);
            // A bug in Kiln keeps its cause: the stack goes to the detailed log (-v:d).
            if (e.IsInternal && e.InnerException is { } cause) Log.LogMessage(MessageImportance.Low, cause.ToString());
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.LogError(null, "KILN0001", null, Model, 0, 0, 0, 0, e.Message);
        }
        catch (Exception e)
        {
            Log.LogError(null, "KILN0099", null, Model, 0, 0, 0, 0, $"internal error: {e.GetType().Name}: {e.Message} (a bug in Kiln)");
            Log.LogMessage(MessageImportance.Low, e.ToString());
        }
        // Leave nothing half-written behind that a later build would take as up to date.
        foreach (var f in written) File.Delete(f);
        return false;
    }

    private void Report(Diagnostic d)
    {
        var node = d.NodeText is { } text ? text + ": " : "";
        // A diagnostic about the model itself is located at the model as the project names it.
        var file = d.File is null || Path.GetFullPath(d.File) == Path.GetFullPath(Model) ? Model : d.File;
        if (d.Severity == Severity.Warning) Log.LogWarning(null, d.CodeText, null, file, 0, 0, 0, 0, node + d.Message);
        else if (d.Severity == Severity.Error) Log.LogError(null, d.CodeText, null, file, 0, 0, 0, 0, node + d.Message);
        else Log.LogMessage(MessageImportance.High, $"{file}: {d.CodeText}: {node}{d.Message}");
    }
}
