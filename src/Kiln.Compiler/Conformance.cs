using System.Diagnostics;
using System.Globalization;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;

namespace Kiln.Compiler;

/// <summary>One backend test case's result, in the columns of the ONNX Runtime reference file.</summary>
public sealed record CaseResult(string Case, string Status, string OpTypes, string Tags, double Seconds, string Reason);

/// <summary>
/// Runs ONNX backend test cases (a folder with model.onnx and test_data_set_*) through the evaluator. Every case
/// folder under the given directories counts, including ones that cannot be run (a folder with no model is
/// reported as unsupported-data, as the reference file does), so no case is hidden.
/// </summary>
public static class Conformance
{
    public static List<(string Name, string Dir)> FindCases(string dir)
    {
        if (!Directory.Exists(dir)) throw new KilnException(DiagnosticCode.FileNotReadable, "conformance folder does not exist", dir);
        var full = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar);
        var caseDirs = Directory.EnumerateDirectories(full, "*", SearchOption.AllDirectories)
            .Append(full)
            .Where(d => File.Exists(Path.Combine(d, "model.onnx")) || File.Exists(Path.Combine(d, "data.json")))
            .ToList();
        // Names are relative to the data root: the given folder when cases sit two levels below it (group/case),
        // else its parent (the folder is itself a group, or a case).
        var deep = caseDirs.Any(d => Path.GetRelativePath(full, d).Count(ch => ch == Path.DirectorySeparatorChar) >= 1);
        var root = deep ? full : Path.GetDirectoryName(full)!;
        if (caseDirs.Count == 1 && caseDirs[0] == full) root = Path.GetDirectoryName(Path.GetDirectoryName(full)!)!;
        return caseDirs.Select(d => (Path.GetRelativePath(root, d).Replace(Path.DirectorySeparatorChar, '/'), d))
            .OrderBy(c => c.Item1, StringComparer.Ordinal).ToList();
    }

    public static CaseResult RunCase(string name, string dir, EvaluatorOptions options) =>
        RunCase(name, dir, (model, path) => new InterpreterRunner(new Interpreter(model.Graph, options, path)));

    /// <summary>Runs one case on the runner <paramref name="create"/> makes for its model (a KilnException from it is a load error).</summary>
    public static CaseResult RunCase(string name, string dir, Func<Model, string, IModelRunner> create)
    {
        var sw = Stopwatch.StartNew();
        var modelPath = Path.Combine(dir, "model.onnx");
        if (!File.Exists(modelPath))
            return new(name, "unsupported-data", "", "no-model", 0, "no model.onnx (data.json only: the model is downloaded by URL, not shipped)");
        Model model;
        try
        {
            model = OnnxImporter.Import(modelPath);
        }
        catch (KilnException e)
        {
            return new(name, "load-error", "", Tags(name, null), sw.Elapsed.TotalSeconds, OneLine(e));
        }
        using (model)
        {
            var ops = string.Join(",", model.Graph.AllGraphs().SelectMany(g => g.Nodes).Select(n => n.QualifiedOp).Distinct().Order(StringComparer.Ordinal));
            var tags = Tags(name, model);
            IModelRunner runner;
            try
            {
                runner = create(model, modelPath);
            }
            catch (KilnException e)
            {
                return new(name, "load-error", ops, tags, sw.Elapsed.TotalSeconds, OneLine(e));
            }
            using var owned = runner;
            var sets = Directory.EnumerateDirectories(dir, "test_data_set_*").Order(StringComparer.Ordinal).ToList();
            if (sets.Count == 0) return new(name, "unsupported-data", ops, tags, sw.Elapsed.TotalSeconds, "no test_data_set_* folder");
            foreach (var set in sets)
            {
                List<OutputCheck> checks;
                try
                {
                    checks = DataSets.Check(runner, model.Graph, set, DataSets.DefaultAtol, DataSets.DefaultRtol);
                }
                catch (KilnException e)
                {
                    return new(name, "run-error", ops, tags, sw.Elapsed.TotalSeconds, $"{Path.GetFileName(set)}: {OneLine(e)}");
                }
                var bad = checks.FirstOrDefault(c => !c.Ok);
                if (bad is not null)
                    return new(name, "fail", ops, tags, sw.Elapsed.TotalSeconds, $"{Path.GetFileName(set)}: output '{bad.Name}': {bad.Problem}");
            }
            return new(name, "pass", ops, tags, sw.Elapsed.TotalSeconds, "");
        }
    }

    private static string OneLine(KilnException e) => string.Join(" | ", e.Diagnostics.Select(d => d.ToString().Replace('\n', ' ')));

    private static string Tags(string name, Model? model)
    {
        var tags = new SortedSet<string>(StringComparer.Ordinal);
        if (name.Contains("_expanded", StringComparison.Ordinal)) tags.Add("expanded");
        if (model is not null)
        {
            var graphs = model.Graph.AllGraphs().ToList();
            if (graphs.Count > 1) tags.Add("subgraph");
            var types = graphs.SelectMany(g => g.DefinedValues.Concat(g.Outputs.Select(o => o.Value))).Select(v => v.Type).ToList();
            if (types.Any(t => t is SequenceType)) tags.Add("sequence");
            if (types.Any(t => t is OptionalType)) tags.Add("optional");
            if (types.Any(t => Elem(t) == DType.String)) tags.Add("string");
            if (types.Any(t => Elem(t) == DType.F16)) tags.Add("float16");
            if (types.Any(t => Elem(t) == DType.BF16)) tags.Add("bfloat16");
            if (graphs.SelectMany(g => g.Nodes).Any(n => n.Domain == "ai.onnx.preview.training")) tags.Add("training");
        }
        return string.Join(",", tags);
    }

    private static DType? Elem(IrType t) => t switch
    {
        TensorType tt => tt.Elem,
        SequenceType s => Elem(s.Element),
        OptionalType o => Elem(o.Element),
        _ => null,
    };

    /// <summary>Runs the cases, prints failures and totals; returns the results.</summary>
    public static List<CaseResult> Run(IReadOnlyList<string> dirs, string? filter, string? tsv, EvaluatorOptions options, TextWriter output,
        string engine = Engines.Interpreter)
    {
        Engines.Check(engine);
        var cases = dirs.SelectMany(FindCases).Where(c => filter is null || c.Name.Contains(filter, StringComparison.Ordinal)).ToList();
        var results = new List<CaseResult>();
        var workDir = engine == Engines.Compiled ? Engines.TempDir() : null;
        var compiled = workDir is null ? null : CompileCases(cases, workDir);
        try
        {
            foreach (var (name, dir) in cases)
            {
                CaseResult r;
                try
                {
                    r = compiled is null ? RunCase(name, dir, options)
                        : RunCase(name, dir, (_, path) => compiled[name].Runner(path, options.TimeLimit));
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // An internal error in one case is reported as that case's failure, not the end of the run.
                    r = new CaseResult(name, "run-error", "", "", 0, $"internal error KILN0099: {e.GetType().Name}: {e.Message.Replace('\n', ' ')}");
                }
                results.Add(r);
                if (r.Status != "pass") output.WriteLine($"{r.Status,-16} {r.Case}: {r.Reason}");
            }
        }
        finally
        {
            if (workDir is not null) Directory.Delete(workDir, recursive: true);
        }
        Summarize(results, tsv, output);
        if (compiled is not null)
        {
            var built = compiled.Values.Where(c => c.Error is null).ToList();
            output.WriteLine($"compiled: {built.Count(c => c.FullyPlanned)} of {built.Count} cases fully planned (no generic operator call); {compiled.Count - built.Count} did not compile");
        }
        return results;
    }

    /// <summary>A case compiled ahead of its run: the loaded class and blob, or why it could not be compiled.</summary>
    private sealed record CompiledCase(System.Reflection.Assembly? Assembly, string FullName, string BlobPath, KilnException? Error)
    {
        /// <summary>Whether the generated code ran every node from the memory plan (no generic operator call).</summary>
        public bool FullyPlanned { get; init; }

        public IModelRunner Runner(string modelPath, TimeSpan? timeLimit)
        {
            if (Error is not null) throw Error;
            var runner = CompiledRunner.Create(Assembly!, FullName, BlobPath, modelPath);
            runner.TimeLimit = timeLimit;
            return runner;
        }
    }

    /// <summary>
    /// Compiles every case's model to C#, in batches of one Roslyn compilation each (one per case costs far more); a
    /// batch that fails to build is retried case by case, so one bad case cannot fail its neighbours.
    /// </summary>
    private static Dictionary<string, CompiledCase> CompileCases(IReadOnlyList<(string Name, string Dir)> cases, string workDir)
    {
        const int BatchSize = 150;
        var result = new Dictionary<string, CompiledCase>(StringComparer.Ordinal);
        for (var start = 0; start < cases.Count; start += BatchSize)
        {
            var batch = new List<(string Name, CompileResult Result, string Blob)>();
            foreach (var (name, dir) in cases.Skip(start).Take(BatchSize))
            {
                var modelPath = Path.Combine(dir, "model.onnx");
                if (!File.Exists(modelPath)) continue;
                var index = result.Count + batch.Count;
                try
                {
                    using var model = OnnxImporter.Import(modelPath);
                    var r = ModelCompiler.Compile(model, modelPath, new CompileOptions
                    {
                        Namespace = $"Kiln.Conformance.Case{index}",
                        ClassName = CodeGen.CSharp.TypeName(Path.GetFileName(dir)),
                        Verify = false,
                    });
                    var caseDir = Path.Combine(workDir, "case" + index);
                    ModelCompiler.WriteFiles(r, caseDir);
                    batch.Add((name, r, Path.Combine(caseDir, r.ClassName + ".kiln")));
                }
                catch (KilnException e)
                {
                    result[name] = new CompiledCase(null, "", "", e);
                }
            }
            try
            {
                var (assembly, _) = CodeGen.RoslynBuild.Load($"KilnConformance{start}", batch.Select(b => (b.Result.FullName + ".cs", b.Result.Source)));
                foreach (var b in batch) result[b.Name] = new CompiledCase(assembly, b.Result.FullName, b.Blob, null) { FullyPlanned = b.Result.FullyPlanned };
            }
            catch (KilnException)
            {
                foreach (var b in batch)
                {
                    try
                    {
                        var (assembly, _) = CodeGen.RoslynBuild.Load(b.Result.ClassName, [(b.Result.FullName + ".cs", b.Result.Source)]);
                        result[b.Name] = new CompiledCase(assembly, b.Result.FullName, b.Blob, null) { FullyPlanned = b.Result.FullyPlanned };
                    }
                    catch (KilnException e)
                    {
                        result[b.Name] = new CompiledCase(null, "", "", e);
                    }
                }
            }
        }
        return result;
    }

    private static List<CaseResult> Summarize(List<CaseResult> results, string? tsv, TextWriter output)
    {
        var inv = CultureInfo.InvariantCulture;
        output.WriteLine();
        foreach (var g in results.GroupBy(r => r.Case.Split('/')[0]).OrderBy(g => g.Key, StringComparer.Ordinal))
            output.WriteLine($"{g.Key}: {g.Count(r => r.Status == "pass")} of {g.Count()} pass");
        if (tsv is not null)
        {
            using var w = new StreamWriter(tsv);
            w.WriteLine("case\tstatus\top_types\ttags\tseconds\treason");
            foreach (var r in results)
                w.WriteLine($"{r.Case}\t{r.Status}\t{r.OpTypes}\t{r.Tags}\t{r.Seconds.ToString("0.000", inv)}\t{r.Reason.Replace('\t', ' ').Replace('\n', ' ')}");
        }
        output.WriteLine($"conformance: {results.Count(r => r.Status == "pass")} passed, {results.Count(r => r.Status != "pass")} failed");
        return results;
    }
}
