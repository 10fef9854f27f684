using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Kiln.Cli;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Compiler;

// kiln: inspect, dump, export, conformance, run, compile, bench and eval. Exit codes: 0 ok, 1 bad input, 2 internal error.
var root = new RootCommand("Kiln: an ahead-of-time model compiler for .NET");

var modelArg = new Argument<string>("MODEL") { Description = "an .onnx model (its external data beside it)" };
var jsonOpt = new Option<bool>("--json") { Description = "print as JSON" };
var inspect = new Command("inspect", "Inputs, outputs, op histogram, opsets, parameters, bytes by element type, unsupported ops, import peak memory; --json for a machine-readable summary") { modelArg, jsonOpt };
inspect.SetAction(r => Cli.Run(() => Commands.Inspect(r.GetValue(modelArg)!, r.GetValue(jsonOpt))));

var dumpArg = new Argument<string>("MODEL") { Description = "an .onnx model or a .kir dump" };
var outOpt = new Option<string?>("--output", "-o") { Description = "write the IR text to FILE (and its large constants to FILE.weights) instead of stdout", HelpName = "FILE" };
var dumpPasses = new Option<string?>("--passes") { Description = "run this pass pipeline first (docs/pipelines.md) and print what each pass changed to stderr", HelpName = "PIPELINE" };
var planOpt = new Option<bool>("--plan") { Description = $"print the generated code's memory plan instead (where each value lives, the elementwise chains), after --passes (default '{Kiln.Passes.PassPipeline.Default}')" };
var dump = new Command("dump", "Print the model as Kiln IR text (.kir), optionally after a pass pipeline (--passes), to stdout or a file (-o); or, with --plan, the memory plan of its generated code") { dumpArg, outOpt, dumpPasses, planOpt };
dump.SetAction(r => Cli.Run(() =>
{
    if (r.GetValue(planOpt)) Commands.DumpPlan(r.GetValue(dumpArg)!, r.GetValue(outOpt), r.GetValue(dumpPasses));
    else Commands.Dump(r.GetValue(dumpArg)!, r.GetValue(outOpt), r.GetValue(dumpPasses));
}));

var kirArg = new Argument<string>("IR") { Description = "a .kir dump (its weights file beside it)" };
var onnxOut = new Option<string>("--output", "-o") { Description = "the .onnx file to write", Required = true, HelpName = "FILE" };
var export = new Command("export", "Write Kiln IR text back out as an ONNX model") { kirArg, onnxOut };
export.SetAction(r => Cli.Run(() => Commands.Export(r.GetValue(kirArg)!, r.GetValue(onnxOut)!)));

var confDirs = new Argument<string[]>("DIR") { Description = "folders of ONNX backend test cases (model.onnx + test_data_set_*)", Arity = ArgumentArity.OneOrMore };
var engineOpt = new Option<string>("--engine") { Description = "the engine that runs the cases: interpreter (Kiln's reference evaluator) or compiled (each case compiled to C#, in batches per Roslyn compilation)", DefaultValueFactory = _ => "interpreter", HelpName = "interpreter|compiled" };
var filterOpt = new Option<string?>("--filter") { Description = "run only cases whose name contains TEXT", HelpName = "TEXT" };
var tsvOpt = new Option<string?>("--tsv") { Description = "write one row per case (the columns of the ONNX Runtime reference file) to FILE", HelpName = "FILE" };
var timeLimitOpt = new Option<double>("--time-limit") { Description = "seconds one test data set may run, in either engine, before it fails as run-error (0: no limit)", DefaultValueFactory = _ => 60, HelpName = "SECONDS" };
var conformance = new Command("conformance", "Run ONNX backend test cases through an engine (--engine: the evaluator or compiled C#) and compare with their expected outputs; print failures and pass counts per group. --filter picks cases, --tsv writes a row per case, --time-limit bounds each run") { confDirs, engineOpt, filterOpt, tsvOpt, timeLimitOpt };
conformance.SetAction(r => Cli.Run(() => Commands.Conformance(r.GetValue(confDirs)!, r.GetValue(engineOpt)!, r.GetValue(filterOpt), r.GetValue(tsvOpt), r.GetValue(timeLimitOpt))));

var runModel = new Argument<string>("MODEL") { Description = "an .onnx model or a .kir dump" };
var dataOpt = new Option<string>("--data") { Description = "a data-set folder (input_N.pb, output_N.pb) or a folder of test_data_set_* folders", Required = true, HelpName = "DIR" };
var atolOpt = new Option<double>("--atol") { Description = "absolute tolerance", DefaultValueFactory = _ => DataSets.DefaultAtol, HelpName = "A" };
var rtolOpt = new Option<double>("--rtol") { Description = "relative tolerance (times |expected|)", DefaultValueFactory = _ => DataSets.DefaultRtol, HelpName = "R" };
var budgetOpt = new Option<double?>("--memory-budget-gb") { Description = "refuse runs whose tensors would exceed GB GiB, in either engine (default: a quarter of the memory, at most 8 GiB)", HelpName = "GB" };
var runEngine = new Option<string>("--engine") { Description = "interpreter (the reference evaluator) or compiled (compile to C# in memory with Roslyn, then run)", DefaultValueFactory = _ => "interpreter", HelpName = "interpreter|compiled" };
var runPasses = new Option<string?>("--passes") { Description = $"the pass pipeline (docs/pipelines.md), in either engine; without it the interpreter runs the model as it is and compiling runs '{Kiln.Passes.PassPipeline.Default}'", HelpName = "PIPELINE" };
var passesOpt = new Option<string?>("--passes") { Description = $"the pass pipeline (docs/pipelines.md); default '{Kiln.Passes.PassPipeline.Default}'", HelpName = "PIPELINE" };
var calibrationOpt = new Option<string?>("--calibration") { Description = "calibration inputs for the passes that read activations (quantize{method=gptq|awq}, prune{method=wanda|sparsegpt}, lowrank, prune-structured, reconstruct, …): a folder of input_N.pb sets, or a token file (int64 [rows, tokens])", HelpName = "DIR|FILE" };
var run = new Command("run", "Run data sets through an engine (--engine), after a pass pipeline (--passes); print max abs/rel error per output; exit 1 when out of tolerance (--atol, --rtol) or over the memory budget") { runModel, dataOpt, atolOpt, rtolOpt, budgetOpt, runEngine, runPasses, calibrationOpt };
run.SetAction(r => Cli.Run(() => Commands.RunData(r.GetValue(runModel)!, r.GetValue(dataOpt)!, r.GetValue(atolOpt), r.GetValue(rtolOpt), r.GetValue(budgetOpt), r.GetValue(runEngine)!, r.GetValue(runPasses), r.GetValue(calibrationOpt))));

var compileModel = new Argument<string>("MODEL") { Description = "an .onnx model or a .kir dump" };
var compileOut = new Option<string>("--output", "-o") { Description = "folder for CLASS.cs, CLASS.kiln and CLASS.report.md", Required = true, HelpName = "DIR" };
var nsOpt = new Option<string>("--namespace") { Description = "namespace of the generated class", DefaultValueFactory = _ => "Kiln.Models", HelpName = "NAMESPACE" };
var classOpt = new Option<string?>("--class") { Description = "name of the generated class (default: PascalCase of the model's file name, or its folder's for model.onnx)", HelpName = "NAME" };
var noVerifyOpt = new Option<bool>("--no-verify") { Description = "skip building the generated code with Roslyn to check it" };
var dumpIrOpt = new Option<string?>("--dump-ir") { Description = "write the IR after import and after each pass to DIR (00-import.kir, 01-fold.kir, …)", HelpName = "DIR" };
var compile = new Command("compile", "Compile a model to C# (one class), a .kiln weight blob and a compile report, after a pass pipeline (--passes); the code is built with Roslyn to check it unless --no-verify") { compileModel, passesOpt, compileOut, nsOpt, classOpt, noVerifyOpt, dumpIrOpt, calibrationOpt };
compile.SetAction(r => Cli.Run(() => Commands.Compile(r.GetValue(compileModel)!, r.GetValue(passesOpt), r.GetValue(compileOut)!, r.GetValue(nsOpt)!, r.GetValue(classOpt), !r.GetValue(noVerifyOpt), r.GetValue(dumpIrOpt), r.GetValue(calibrationOpt))));

root.Subcommands.Add(inspect);
root.Subcommands.Add(dump);
root.Subcommands.Add(export);
root.Subcommands.Add(conformance);
root.Subcommands.Add(run);
root.Subcommands.Add(compile);

var benchModel = new Argument<string>("MODEL") { Description = "an .onnx model" };
var ortOpt = new Option<bool>("--ort") { Description = "run ONNX Runtime side by side in the same process (graph optimization all, the same threads) and print ratios against it" };
var baselinePassesOpt = new Option<string?>("--baseline-passes") { Description = "a second Kiln pipeline timed in the same run; ratio_vs_baseline is --passes over it (above 1: --passes is faster)", HelpName = "PIPELINE" };
var threadsOpt = new Option<int>("--threads") { Description = "threads for every engine (default: every core)", HelpName = "N" };
var roundsOpt = new Option<int>("--rounds") { Description = "measured rounds per engine (min, median and max reported)", DefaultValueFactory = _ => 5, HelpName = "N" };
var benchData = new Option<string?>("--data") { Description = "a data set whose inputs to time (models that are not decoders; default: test_data_set_* beside the model)", HelpName = "DIR" };
var weightsOpt = new Option<string>("--weights") { Description = "how Kiln's blob reaches memory: copy (anonymous memory) or map (zero copy)", DefaultValueFactory = _ => "copy" };
weightsOpt.AcceptOnlyFromAmong("copy", "map");
var pagesOpt = new Option<string>("--pages") { Description = "page treatment of every engine's weights: huge (transparent huge pages where the OS allows) or plain (none, for the whole process)", DefaultValueFactory = _ => "huge" };
pagesOpt.AcceptOnlyFromAmong("huge", "plain");
var bench = new Command("bench", "Time a compiled model (decoders: prefill of 128 tokens, decode tokens/s; others: latency on --data) against ONNX Runtime (--ort) and/or a baseline pipeline (--baseline-passes), in one process, with the same --threads and --pages for every engine; --json prints the documented report (docs/bench.md)")
    { benchModel, passesOpt, baselinePassesOpt, ortOpt, threadsOpt, roundsOpt, benchData, weightsOpt, pagesOpt, jsonOpt, calibrationOpt };
bench.SetAction(r => Cli.Run(() =>
{
    var report = Kiln.Cli.Bench.Bench.Run(new Kiln.Cli.Bench.BenchOptions(r.GetValue(benchModel)!)
    {
        Passes = r.GetValue(passesOpt),
        BaselinePasses = r.GetValue(baselinePassesOpt),
        Ort = r.GetValue(ortOpt),
        Threads = r.GetValue(threadsOpt),
        Rounds = Math.Max(1, r.GetValue(roundsOpt)),
        Data = r.GetValue(benchData),
        Weights = r.GetValue(weightsOpt) == "map" ? Kiln.Runtime.Weights.WeightLoading.Map : Kiln.Runtime.Weights.WeightLoading.Copy,
        Pages = r.GetValue(pagesOpt) == "plain" ? Kiln.Cli.Bench.Pages.Plain : Kiln.Cli.Bench.Pages.Huge,
        Calibration = r.GetValue(calibrationOpt),
    }, Console.Error);
    if (r.GetValue(jsonOpt)) Console.WriteLine(report.ToJson());
    else report.Print(Console.Out);
}));
root.Subcommands.Add(bench);

var evalModel = new Argument<string>("MODEL") { Description = "a decoder LLM (.onnx) whose first (or 'logits') output is next-token logits" };
var evalPasses = new Option<string>("--passes") { Description = "the compression pipeline to judge, e.g. 'fold,dce,cse,fuse,quantize{bits=4 group=32}'", Required = true, HelpName = "PIPELINE" };
var evalTokens = new Option<string>("--tokens") { Description = "token file: one TensorProto of int64 [rows, tokens] (as eval_tokens.pb)", Required = true, HelpName = "FILE" };
var evalCmd = new Command("eval", "Compare a compressed model (--passes) with the float one on token sequences (--tokens): perplexity of both, KL divergence, top-1 agreement, weight bytes; --json prints the documented report") { evalModel, evalPasses, evalTokens, calibrationOpt, jsonOpt };
evalCmd.SetAction(r => Cli.Run(() =>
{
    var json = r.GetValue(jsonOpt);
    var result = Eval.Run(r.GetValue(evalModel)!, r.GetValue(evalPasses)!, r.GetValue(evalTokens)!, r.GetValue(calibrationOpt), json ? null : line => Console.Error.WriteLine(line));
    if (json) Console.WriteLine(result.ToJson());
    else Eval.Print(result, Console.Out);
}));
root.Subcommands.Add(evalCmd);
return root.Parse(args).Invoke();

namespace Kiln.Cli
{
    internal static class Cli
    {
        public static int Run(Action action) => Run(() =>
        {
            action();
            return 0;
        });

        public static int Run(Func<int> action)
        {
            try
            {
                return action();
            }
            catch (KilnException e)
            {
                foreach (var d in e.Diagnostics) Console.Error.WriteLine(d);
                if (!e.IsInternal) return 1;
                Bug(e.InnerException);
                return 2;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
            catch (Kiln.Runtime.Weights.WeightBlobException e)
            {
                // A damaged blob found on a model's first run (lazy verification): the file's fault, not Kiln's.
                Console.Error.WriteLine($"error {e.Message}");
                return 1;
            }
            catch (Runtime.Compiled.KilnInternalException e)
            {
                Console.Error.WriteLine($"internal error {e.Message}");
                Bug(e);
                return 2;
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"internal error KILN0099: {e.GetType().Name}: {e.Message}");
                Bug(e);
                return 2;
            }
        }

        /// <summary>The end of an internal error's report: whose fault it is, and the stack (cause included) with KILN_DEBUG=1.</summary>
        private static void Bug(Exception? e)
        {
            Console.Error.WriteLine("This is a bug in Kiln; set KILN_DEBUG=1 for the stack trace.");
            if (e is not null && Environment.GetEnvironmentVariable("KILN_DEBUG") == "1") Console.Error.WriteLine(e);
        }
    }

    internal static class Commands
    {
        public static void Inspect(string path, bool json)
        {
            // Import first and measure it alone, then read the file again for the summary.
            string? importError = null;
            var memory = MemoryProbe.Measure(() =>
            {
                try
                {
                    using var model = OnnxImporter.Import(path);
                }
                catch (KilnException e) when (e.Diagnostics.All(d => d.Code != DiagnosticCode.FileNotReadable && d.Code != DiagnosticCode.EmptyFile && d.Code != DiagnosticCode.MalformedProtobuf))
                {
                    importError = string.Join("\n", e.Diagnostics);
                }
            });
            GC.Collect();
            var s = ModelSummary.Read(path);
            if (json)
            {
                var doc = new
                {
                    s.File, s.FileBytes, s.IrVersion, s.Producer, s.Opsets, s.Inputs, s.Outputs, s.NodeCount, s.OpHistogram,
                    s.InitializerParameters, s.InitializerCount, s.ConstantNodeParameters, s.ConstantNodeCount, s.BytesByElementType,
                    s.UnsupportedOps, ImportError = importError,
                    s.ExternalDataBytes, ImportPeakMemoryBytes = memory.AboveBaseline, ProcessPeakMemoryBytes = memory.PeakBytes,
                    ImportPeakToFileSize = s.TotalBytes == 0 ? 0 : Math.Round((double)memory.AboveBaseline / s.TotalBytes, 3),
                };
                Console.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
                return;
            }
            var inv = CultureInfo.InvariantCulture;
            Console.WriteLine($"model: {s.File} ({s.FileBytes.ToString("N0", inv)} bytes{(s.ExternalDataBytes > 0 ? $", external data {s.ExternalDataBytes.ToString("N0", inv)} bytes" : "")})");
            Console.WriteLine($"ir_version: {s.IrVersion}   producer: {(s.Producer.Length > 0 ? s.Producer : "(none)")}");
            Console.WriteLine($"opsets: {string.Join(", ", s.Opsets.Select(o => $"{o.Key} {o.Value}"))}");
            Console.WriteLine("inputs:");
            foreach (var i in s.Inputs) Console.WriteLine($"  {i.Name}: {i.Type}");
            Console.WriteLine("outputs:");
            foreach (var o in s.Outputs) Console.WriteLine($"  {o.Name}: {o.Type}");
            Console.WriteLine($"nodes: {s.NodeCount.ToString("N0", inv)}");
            Console.WriteLine("ops:");
            foreach (var (op, n) in s.OpHistogram.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal))
                Console.WriteLine($"  {op,-28} {n,7}");
            Console.WriteLine($"parameters in initializers: {s.InitializerParameters.ToString("N0", inv)} ({s.InitializerCount} tensors)");
            Console.WriteLine($"parameters in Constant nodes: {s.ConstantNodeParameters.ToString("N0", inv)} ({s.ConstantNodeCount} nodes)");
            Console.WriteLine("bytes by element type:");
            foreach (var (t, b) in s.BytesByElementType) Console.WriteLine($"  {t,-8} {b.ToString("N0", inv),16}");
            Console.WriteLine(s.UnsupportedOps.Count == 0 ? "unsupported ops: none" : $"unsupported ops: {string.Join(", ", s.UnsupportedOps)}");
            if (importError is not null) Console.WriteLine($"import: failed\n{importError}");
            Console.WriteLine($"import peak memory: {Mib(memory.AboveBaseline)} above the process baseline ({(s.TotalBytes == 0 ? 0 : (double)memory.AboveBaseline / s.TotalBytes).ToString("0.000", inv)}× the size of the model with its external data; process peak {Mib(memory.PeakBytes)})");
        }

        private static string Mib(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture) + " MiB";

        public static Model Load(string path)
        {
            if (path.EndsWith(".kir", StringComparison.OrdinalIgnoreCase))
            {
                if (!File.Exists(path)) throw new KilnException(DiagnosticCode.FileNotReadable, "file does not exist", path);
                var text = File.ReadAllText(path);
                var weightsPath = WeightFile.PathFor(path);
                var weights = File.Exists(weightsPath) ? WeightFile.Open(weightsPath) : null;
                try
                {
                    var model = KirParser.ParseModel(text, weights, path);
                    if (weights is not null) model.Resources.Add(weights.Handle);
                    var problems = Verifier.Check(model.Graph);
                    if (problems.Count > 0) throw new KilnException(problems).WithFile(path);
                    return model;
                }
                catch
                {
                    weights?.Dispose();
                    throw;
                }
            }
            return OnnxImporter.Import(path);
        }

        public static void Dump(string path, string? output, string? passes)
        {
            using var model = Load(path);
            if (passes is not null)
                foreach (var r in Kiln.Passes.PassManager.Run(model, passes))
                    Console.Error.WriteLine($"{r.Step}: {r.NodesBefore} → {r.NodesAfter} nodes {string.Join(", ", r.Counts.Select(c => $"{c.Key} {c.Value}"))}");
            if (output is null)
            {
                Console.Out.Write(KirPrinter.Print(model));
                return;
            }
            var weights = KirPrinter.WriteFile(model, output);
            Console.Error.WriteLine($"wrote {output}{(weights > 0 ? $" and {WeightFile.PathFor(output)} ({weights} tensors)" : "")}");
        }

        /// <summary>The memory plan of the model's generated code, after the pipeline (default: the compile default).</summary>
        public static void DumpPlan(string path, string? output, string? passes)
        {
            using var model = Load(path);
            var result = ModelCompiler.Compile(model, path, new CompileOptions { Passes = passes, Verify = false });
            if (output is null) Console.Out.Write(result.Plan);
            else
            {
                File.WriteAllText(output, result.Plan);
                Console.Error.WriteLine($"wrote {output}");
            }
        }

        public static int Conformance(string[] dirs, string engine, string? filter, string? tsv, double timeLimitSeconds)
        {
            if (timeLimitSeconds < 0 || double.IsNaN(timeLimitSeconds))
                throw new KilnException(DiagnosticCode.BadAttribute, $"--time-limit must be 0 (no limit) or a positive number of seconds, got {timeLimitSeconds}");
            var options = new Evaluator.EvaluatorOptions { TimeLimit = timeLimitSeconds > 0 ? TimeSpan.FromSeconds(timeLimitSeconds) : null };
            var results = Kiln.Compiler.Conformance.Run(dirs, filter, tsv, options, Console.Out, engine);
            return results.All(r => r.Status == "pass") ? 0 : 1;
        }

        public static int RunData(string modelPath, string data, double atol, double rtol, double? budgetGb, string engine, string? passes, string? calibration)
        {
            Engines.Check(engine);
            using var model = Load(modelPath);
            var options = new Evaluator.EvaluatorOptions();
            if (budgetGb is { } gb) options = options with { MemoryBudget = (long)(gb * (1L << 30)) };
            string? workDir = null;
            Model? transformed = null;
            IModelRunner runner;
            if (engine == Engines.Compiled)
            {
                // The data sets bind inputs by the model's own graph, so compile a second copy (passes rewrite in place).
                using var toCompile = Load(modelPath);
                workDir = Engines.TempDir();
                var compiledRunner = CompiledRunner.CompileInMemory(toCompile, modelPath, new CompileOptions { Passes = passes, Calibration = CalibrationInputs.Load(calibration, toCompile.Graph) }, workDir, Runtime.Weights.WeightLoading.Map, out var compiled);
                compiledRunner.Model.MemoryBudgetBytes = options.MemoryBudget;
                runner = compiledRunner;
                CalibrationInputs.NoteUnused(calibration, compiled.Passes, compiled.Pipeline);
            }
            else
            {
                // The passes run here too, so the errors printed are the compressed model's, not the float one's.
                if (passes is not null)
                {
                    transformed = Load(modelPath);
                    var reports = Kiln.Passes.PassManager.Run(transformed, Kiln.Passes.PassPipeline.Parse(passes), calibration: CalibrationInputs.Load(calibration, transformed.Graph));
                    CalibrationInputs.NoteUnused(calibration, reports, passes);
                }
                else if (calibration is not null)
                    Console.Error.WriteLine($"note: --calibration {calibration} was not used: the interpreter runs the model as it is without --passes");
                runner = new InterpreterRunner(new Evaluator.Interpreter((transformed ?? model).Graph, options, modelPath));
            }
            var owned = runner;
            var inv = CultureInfo.InvariantCulture;
            var ok = true;
            try
            {
                foreach (var set in DataSets.Find(data))
                {
                    var sw = System.Diagnostics.Stopwatch.StartNew();
                    var checks = DataSets.Check(runner, model.Graph, set, atol, rtol);
                    var peak = runner is InterpreterRunner ir ? $", peak {Runtime.MemoryBudget.Format(ir.Interpreter.PeakBytes)} in tensors" : "";
                    Console.WriteLine($"{set} ({engine}): {sw.Elapsed.TotalMilliseconds.ToString("0.0", inv)} ms{peak}");
                    foreach (var c in checks)
                    {
                        Console.WriteLine($"  {c.Name}: max abs {c.MaxAbs.ToString("G4", inv)}, max rel {c.MaxRel.ToString("G4", inv)}  {(c.Ok ? "ok" : "FAIL: " + c.Problem)}");
                        ok &= c.Ok;
                    }
                }
            }
            finally
            {
                owned.Dispose();
                transformed?.Dispose();
                if (workDir is not null) Directory.Delete(workDir, recursive: true);
            }
            Console.WriteLine(ok ? $"all outputs within atol {atol.ToString(inv)} + rtol {rtol.ToString(inv)}·|expected|" : "some outputs are out of tolerance");
            return ok ? 0 : 1;
        }

        public static void Compile(string modelPath, string? passes, string output, string ns, string? className, bool verify, string? dumpIr, string? calibration)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var model = Load(modelPath);
            var result = ModelCompiler.Compile(model, modelPath, new CompileOptions
            {
                Passes = passes,
                Namespace = ns,
                ClassName = className,
                Verify = verify,
                DumpIrDirectory = dumpIr,
                Calibration = CalibrationInputs.Load(calibration, model.Graph),
                Progress = Console.WriteLine,
            });
            CalibrationInputs.NoteUnused(calibration, result.Passes, result.Pipeline);
            var files = ModelCompiler.WriteFiles(result, output);
            var inv = CultureInfo.InvariantCulture;
            foreach (var f in files) Console.WriteLine($"wrote {f} ({new FileInfo(f).Length.ToString("N0", inv)} bytes)");
            Console.WriteLine($"generic operator calls: {result.GenericCalls}");
            Console.WriteLine($"{result.FullName}: {result.NodesBefore} → {result.NodesAfter} nodes, {result.Weights.Count} weights ({result.WeightBytes.ToString("N0", inv)} bytes), " +
                $"{clock.Elapsed.TotalSeconds.ToString("0.0", inv)} s, peak working set {Runtime.MemoryBudget.Format(System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64)}");
        }

        public static void Export(string path, string output)
        {
            using var model = Load(path);
            OnnxExporter.Export(model, output);
            Console.Error.WriteLine($"wrote {output}");
        }
    }
}
