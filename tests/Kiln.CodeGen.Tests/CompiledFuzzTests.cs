using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime.Compiled;
using Kiln.TestSupport;
using Xunit.Abstractions;

namespace Kiln.CodeGen.Tests;

/// <summary>
/// The fuzz corpus (<see cref="DamagedModels"/>) through the compiled engine: every damaged model that imports is
/// compiled (the default pipeline), built and run on synthesized inputs under a 512 MiB budget. Each must end in
/// a result or a Kiln diagnostic of bad input; an internal error (KILN0099, a <see cref="KilnInternalException"/>)
/// or any other exception fails the test, since it is a bug in Kiln.
/// </summary>
public sealed class CompiledFuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-fuzz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed record Case(string Name, Model Model, Dictionary<string, object?> Inputs, CompileResult Result, string Blob);

    [Fact]
    public void Damaged_models_compiled_end_in_a_result_or_a_diagnostic()
    {
        var outcomes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        void Count(string outcome) => outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        void Fail(string name, Exception e)
        {
            Count("internal error");
            unexpected.Add($"{name}: {e.GetType().Name}: {e.Message}");
        }
        void Refused(string name, KilnException e)
        {
            if (e.IsInternal) Fail(name, e);
            else Count("refused: " + e.Diagnostics[0].CodeText);
        }

        var cases = new List<Case>();
        var index = 0;
        foreach (var (name, bytes) in DamagedModels.Corpus())
        {
            Model? model = null;
            try
            {
                model = OnnxImporter.Import(bytes, name);
                var inputs = DamagedModels.SynthesizeInputs(model.Graph);
                if (inputs is null)
                {
                    Count("imported, inputs not synthesizable");
                    model.Dispose();
                    continue;
                }
                var result = ModelCompiler.Compile(model, "fuzz.onnx", new CompileOptions { Namespace = $"Kiln.Fuzz.Case{index}", ClassName = "Damaged", Verify = false });
                var dir = Path.Combine(_dir, "case" + index++);
                ModelCompiler.WriteFiles(result, dir);
                cases.Add(new Case(name, model, inputs, result, Path.Combine(dir, result.ClassName + ".kiln")));
            }
            catch (KilnException e)
            {
                model?.Dispose();
                Refused(name, e);
            }
            catch (Exception e)
            {
                model?.Dispose();
                Fail(name, e);
            }
        }

        // One Roslyn compilation for all (one per case costs far more); a failing batch is retried case by case.
        var assemblies = new Dictionary<Case, System.Reflection.Assembly>();
        try
        {
            var (all, _) = RoslynBuild.Load("KilnFuzz", cases.Select(c => (c.Result.FullName + ".cs", c.Result.Source)));
            foreach (var c in cases) assemblies[c] = all;
        }
        catch (KilnException)
        {
            foreach (var c in cases)
                try { assemblies[c] = RoslynBuild.Load("KilnFuzz" + c.Result.Namespace, [(c.Result.FullName + ".cs", c.Result.Source)]).Assembly; }
                catch (KilnException e) { Fail(c.Name, e); }
        }

        foreach (var c in cases)
        {
            if (!assemblies.TryGetValue(c, out var assembly)) continue;
            Exception? error = null;
            var thread = new Thread(() =>
            {
                try
                {
                    using var runner = CompiledRunner.Create(assembly, c.Result.FullName, c.Blob, c.Name);
                    runner.Model.MemoryBudgetBytes = 512L << 20;
                    runner.Run(c.Inputs);
                }
                catch (Exception e) { error = e; }
            }, 64 << 20);
            thread.Start();
            if (!thread.Join(TimeSpan.FromSeconds(20)))
            {
                unexpected.Add($"{c.Name}: still running after 20 s");
                Count("hang");
                continue;
            }
            switch (error)
            {
                case null: Count("compiled and ran"); break;
                case KilnException k: Refused(c.Name, k); break;
                default: Fail(c.Name, error); break;
            }
            c.Model.Dispose();
        }
        foreach (var (k, v) in outcomes) output.WriteLine($"{k}: {v}");
        Assert.Equal(DamagedModels.Count, outcomes.Values.Sum());
        Assert.True(unexpected.Count == 0, string.Join("\n", unexpected));
        Assert.True(outcomes.GetValueOrDefault("compiled and ran") > 0, "no damaged model ran at all: the corpus is not exercising compiled code");
    }
}
