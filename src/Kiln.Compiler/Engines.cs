using System.Reflection;
using Kiln.CodeGen;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Compiled;
using Kiln.Runtime.Weights;

namespace Kiln.Compiler;

/// <summary>Something that runs a model on named inputs: the reference evaluator, or the model compiled to C#.</summary>
public interface IModelRunner : IDisposable
{
    IReadOnlyDictionary<string, object?> Run(IReadOnlyDictionary<string, object?> inputs);
}

/// <summary>The reference evaluator as a runner.</summary>
public sealed class InterpreterRunner(Interpreter interpreter) : IModelRunner
{
    public Interpreter Interpreter { get; } = interpreter;

    public IReadOnlyDictionary<string, object?> Run(IReadOnlyDictionary<string, object?> inputs) => Interpreter.Run(inputs);

    public void Dispose() { }
}

/// <summary>A compiled model class as a runner: inputs by name, errors as Kiln diagnostics. Owns the weight blob it opened.</summary>
public sealed class CompiledRunner(ICompiledModel model, string source, WeightBlob? blob = null) : IModelRunner
{
    public ICompiledModel Model { get; } = model;

    /// <summary>The weights the model reads (null when the model opened them itself).</summary>
    public WeightBlob? Blob { get; } = blob;

    /// <summary>Wall-clock limit for one run, checked between operator calls (as the interpreter's <c>TimeLimit</c>); null for none.</summary>
    public TimeSpan? TimeLimit { get; set; }

    public IReadOnlyDictionary<string, object?> Run(IReadOnlyDictionary<string, object?> inputs)
    {
        foreach (var name in inputs.Keys)
            if (!Model.InputNames.Contains(name))
                throw new KilnException(new Diagnostic(DiagnosticCode.InputMismatch, $"input '{name}' is not an input of the model (inputs: {string.Join(", ", Model.InputNames)})", source));
        var ordered = Model.InputNames.Select(n => inputs.GetValueOrDefault(n)).ToArray();
        object?[] outs;
        try
        {
            using var limit = Generated.TimeLimit(TimeLimit);
            outs = Model.RunValues(ordered);
        }
        catch (ModelRunException e)
        {
            var code = e.Code switch { "KILN0021" => DiagnosticCode.InputMismatch, "KILN0022" => DiagnosticCode.MemoryBudgetExceeded, _ => DiagnosticCode.RuntimeError };
            throw new KilnException(new Diagnostic(code, e.Message[(e.Code.Length + 2)..], source, e.Node, null, e.Op));
        }
        catch (WeightBlobException e)
        {
            throw BlobError(e, Blob?.Source ?? source);
        }
        return Model.OutputNames.Select((n, i) => (n, outs[i])).ToDictionary(x => x.n, x => x.Item2);
    }

    public void Dispose()
    {
        Model.Dispose();
        Blob?.Dispose();
    }

    /// <summary>
    /// Opens the blob and instantiates a compiled class over it, from a loaded assembly. The CLI loads models it did
    /// not compile against, so this one step uses reflection.
    /// </summary>
    public static CompiledRunner Create(Assembly assembly, string fullName, string blobPath, string source, WeightLoading loading = WeightLoading.Map)
    {
        var type = assembly.GetType(fullName) ?? throw new KilnException(new Diagnostic(DiagnosticCode.CodeGenFailed, $"compiled assembly has no class {fullName}", source));
        WeightBlob blob;
        try
        {
            blob = WeightBlob.Open(blobPath, type.GetField("ModelHash")?.GetRawConstantValue() as string, loading);
        }
        catch (WeightBlobException w)
        {
            throw BlobError(w, blobPath);
        }
        try
        {
            return new CompiledRunner((ICompiledModel)Activator.CreateInstance(type, blob)!, source, blob);
        }
        catch (TargetInvocationException e) when (e.InnerException is WeightBlobException w)
        {
            blob.Dispose();
            throw BlobError(w, blobPath);
        }
        catch
        {
            blob.Dispose();
            throw;
        }
    }

    /// <summary>A blob's refusal (its message starts with its code) as a Kiln diagnostic at <paramref name="file"/>.</summary>
    private static KilnException BlobError(WeightBlobException e, string file) =>
        new(new Diagnostic(DiagnosticCode.InvalidWeightBlob, e.Message["KILN0025: ".Length..], file));

    /// <summary>Compiles a model in memory (Roslyn) with its blob in a temporary folder, and instantiates it.</summary>
    public static CompiledRunner CompileInMemory(Model model, string modelPath, CompileOptions options, string workDir, WeightLoading loading = WeightLoading.Map) =>
        CompileInMemory(model, modelPath, options, workDir, loading, out _);

    /// <inheritdoc cref="CompileInMemory(Model, string, CompileOptions, string, WeightLoading)"/>
    public static CompiledRunner CompileInMemory(Model model, string modelPath, CompileOptions options, string workDir, WeightLoading loading, out CompileResult result)
    {
        result = ModelCompiler.Compile(model, modelPath, options with { Verify = false });
        ModelCompiler.WriteFiles(result, workDir);
        var (assembly, _) = RoslynBuild.Load(result.ClassName, [(result.ClassName + ".cs", result.Source)]);
        return Create(assembly, result.FullName, Path.Combine(workDir, result.ClassName + ".kiln"), modelPath, loading);
    }
}

/// <summary>The engines <c>kiln run</c> and <c>kiln conformance</c> take.</summary>
public static class Engines
{
    public const string Interpreter = "interpreter";
    public const string Compiled = "compiled";

    public static void Check(string engine)
    {
        if (engine is not (Interpreter or Compiled))
            throw new KilnException(DiagnosticCode.BadAttribute, $"unknown engine '{engine}' (available: {Interpreter}, {Compiled})");
    }

    /// <summary>A fresh temporary folder for compiled artifacts.</summary>
    public static string TempDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "kiln-" + Environment.ProcessId + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }
}
