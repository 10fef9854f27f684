using System.Globalization;
using Kiln.Ir;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.Build.Tests;

/// <summary>
/// The user's story, end to end: a fresh project outside the repository references the packed Kiln.Build from a
/// local feed, lists models as &lt;KilnModel&gt; items, builds (the Kiln target compiles them before the app's own
/// compile) and runs; the output matches the reference evaluator. Then: a second build skips the Kiln target, a new
/// Passes value recompiles, IR dumps parse, a design-time build sees the generated class, and bad models or
/// pipelines fail the build with a KILN error at the model file and no stack trace.
/// </summary>
[Collection("dotnet builds")]
public sealed class KilnModelBuildTests(PackageFeed feed) : IClassFixture<PackageFeed>
{
    private const string SkipLine = "Skipping target \"_KilnCompileModel\" because all output files are up-to-date";

    private static string TinyMlp => Path.Combine(Fixtures.RepoRoot, "examples", "tiny-mlp", "model.onnx");

    private static float[] Input => Enumerable.Range(0, 32).Select(i => MathF.Sin(i)).ToArray();

    private string App(string name, string models, string program)
    {
        var dir = feed.NewApp(name);
        File.Copy(TinyMlp, Path.Combine(dir, "Models", "tiny.onnx"));
        File.WriteAllText(Path.Combine(dir, name + ".csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Kiln.Build" Version="1.0.0" />
                {models}
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(dir, "Program.cs"), program);
        return dir;
    }

    private const string RunBoth = """
        using Kiln.Runtime;
        var x = Tensor.FromArray(DType.F32, [2, 16], Enumerable.Range(0, 32).Select(i => MathF.Sin(i)).ToArray());
        using (var file = App.TinyModel.Load()) Print(file.Run(x).probs);
        using (var embedded = App.TinyEmbedded.Load()) Print(embedded.Run(x).probs);
        static void Print(Tensor t) => Console.WriteLine(string.Join(" ", t.Span<float>().ToArray().Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture))));
        """;

    private (int Code, string Log) Build(string dir, string extra = "") => feed.Dotnet($"build -v:n -nodeReuse:false {extra}", dir);

    [Fact]
    public void A_fresh_project_builds_runs_and_rebuilds_only_what_changed()
    {
        var dir = App("App", """
            <KilnModel Include="Models/tiny.onnx" Passes="fold,fuse" ClassName="TinyModel" />
            <KilnModel Include="Models/tiny.onnx" ClassName="TinyEmbedded" EmbedWeights="true" />
            """, RunBoth);
        var (code, log) = Build(dir);
        Assert.True(code == 0, log);
        Assert.Contains("Kiln: compiling Models/tiny.onnx → App.TinyModel", log);
        Assert.Contains("Kiln: tiny.onnx: pass 2/2 fuse", log); // progress reaches the build log,
        Assert.Matches(@"Kiln: tiny\.onnx:   fuse: pattern \d+/\d+ matmul-add: 2 fused", log); // from inside a pass too
        var output = Path.Combine(dir, "bin", "Debug", "net10.0");
        Assert.True(File.Exists(Path.Combine(output, "TinyModel.kiln")), "the blob is copied next to the app");
        Assert.False(File.Exists(Path.Combine(output, "TinyEmbedded.kiln")), "an embedded blob is not copied");

        // The app's results against the reference evaluator on the same input.
        var (runCode, printed) = feed.Dotnet("bin/Debug/net10.0/App.dll", dir);
        Assert.True(runCode == 0, printed);
        AssertMatchesOnnxRuntimeAndEvaluator(printed);

        // Nothing changed: both models' Kiln targets are skipped.
        (code, log) = Build(dir);
        Assert.True(code == 0, log);
        Assert.Equal(2, CountOf(log, SkipLine));
        Assert.DoesNotContain("Kiln: compiling", log);

        // A new pipeline recompiles that model only.
        var project = Path.Combine(dir, "App.csproj");
        File.WriteAllText(project, File.ReadAllText(project).Replace("Passes=\"fold,fuse\"", "Passes=\"fold,dce,cse,fuse\""));
        (code, log) = Build(dir);
        Assert.True(code == 0, log);
        Assert.Contains("Kiln: compiling Models/tiny.onnx → App.TinyModel", log);
        Assert.Equal(1, CountOf(log, SkipLine));

        // Touching the model recompiles both.
        File.SetLastWriteTimeUtc(Path.Combine(dir, "Models", "tiny.onnx"), DateTime.UtcNow);
        (code, log) = Build(dir);
        Assert.True(code == 0, log);
        Assert.Equal(2, CountOf(log, "Kiln: compiling"));

        // dotnet clean removes what Kiln wrote.
        (code, log) = feed.Dotnet("clean -nodeReuse:false", dir);
        Assert.True(code == 0, log);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(dir, "obj", "Debug", "net10.0", "kiln"), "*", SearchOption.AllDirectories));
    }

    [Fact]
    public void A_native_AOT_publish_runs_the_compiled_model()
    {
        // Both blob placements: the file one is published next to the executable, the embedded one inside it.
        var dir = App("Native", """
            <KilnModel Include="Models/tiny.onnx" ClassName="TinyModel" Namespace="App" />
            <KilnModel Include="Models/tiny.onnx" ClassName="TinyEmbedded" Namespace="App" EmbedWeights="true" />
            """, RunBoth);
        var publish = Path.Combine(dir, "publish");
        var (code, log) = feed.Dotnet($"publish -c Release -p:PublishAot=true -nodeReuse:false -o {publish}", dir);
        Assert.True(code == 0, log);
        Assert.DoesNotContain("warning IL", log); // no trimming or AOT warnings from the generated code or the runtime
        Assert.True(File.Exists(Path.Combine(publish, "TinyModel.kiln")));
        Assert.False(File.Exists(Path.Combine(publish, "TinyEmbedded.kiln")));
        Assert.False(File.Exists(Path.Combine(publish, "Native.dll")), "a native executable, not an IL assembly");

        var start = new System.Diagnostics.ProcessStartInfo(Path.Combine(publish, "Native")) { RedirectStandardOutput = true, WorkingDirectory = Path.GetTempPath() };
        using var process = System.Diagnostics.Process.Start(start)!;
        var printed = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
        AssertMatchesOnnxRuntimeAndEvaluator(printed);
    }

    [Fact]
    public void KilnDumpIR_writes_one_parseable_kir_per_pass_and_design_time_builds_see_the_class()
    {
        var dir = App("Dumps", """<KilnModel Include="Models/tiny.onnx" Passes="fold,dce,cse,fuse" ClassName="TinyModel" Namespace="App" />""",
            "using var m = App.TinyModel.Load(); Console.WriteLine(m.OutputNames[0]);");
        var (code, log) = Build(dir, "-p:KilnDumpIR=true");
        Assert.True(code == 0, log);
        var irDir = Path.Combine(dir, "obj", "Debug", "net10.0", "kiln", "TinyModel", "ir");
        var dumps = Directory.GetFiles(irDir, "*.kir").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(["00-import.kir", "01-fold.kir", "02-dce.kir", "03-cse.kir", "04-fuse.kir"], dumps);
        foreach (var dump in dumps)
        {
            var path = Path.Combine(irDir, dump);
            using var weights = WeightFile.Open(WeightFile.PathFor(path));
            var model = KirParser.ParseModel(File.ReadAllText(path), weights, path);
            Assert.Empty(Verifier.Check(model.Graph));
        }
        Assert.Contains("kiln:MatMulAdd", File.ReadAllText(Path.Combine(irDir, "04-fuse.kir")));
        Assert.True(File.Exists(Path.Combine(dir, "obj", "Debug", "net10.0", "kiln", "TinyModel", "TinyModel.report.md")));

        // A design-time build (as an IDE runs it: no compiler execution) lists the generated class among Compile items.
        Directory.Delete(Path.Combine(dir, "obj", "Debug", "net10.0", "kiln"), recursive: true);
        (code, log) = feed.Dotnet("msbuild -t:Compile -p:DesignTimeBuild=true -p:BuildingInsideVisualStudio=true -p:SkipCompilerExecution=true " +
            "-p:ProvideCommandLineArgs=true -nodeReuse:false -getItem:Compile", dir);
        Assert.True(code == 0, log);
        Assert.Contains("kiln/TinyModel/TinyModel.cs", log);
    }

    [Fact]
    public void Bad_models_and_pipelines_fail_the_build_with_a_KILN_error_at_the_model_file()
    {
        var dir = App("Broken", """<KilnModel Include="Models/foo.onnx" />""", "Console.WriteLine();");
        File.WriteAllBytes(Path.Combine(dir, "Models", "foo.onnx"), UnsupportedOpModel());
        var (code, log) = Build(dir);
        Assert.NotEqual(0, code);
        Assert.Contains("Models/foo.onnx : error KILN0005:", log);
        Assert.Contains("Fooo", log);
        NoStackTrace(log);

        var project = Path.Combine(dir, "Broken.csproj");
        File.WriteAllText(project, File.ReadAllText(project).Replace("Models/foo.onnx", "Models/missing.onnx"));
        (code, log) = Build(dir);
        Assert.NotEqual(0, code);
        Assert.Contains("Models/missing.onnx : error KILN0001: the model file does not exist", log);
        NoStackTrace(log);

        File.WriteAllText(project, File.ReadAllText(project).Replace("Include=\"Models/missing.onnx\"", "Include=\"Models/tiny.onnx\" Passes=\"fold,,fuse{\""));
        (code, log) = Build(dir);
        Assert.NotEqual(0, code);
        Assert.Contains("Models/tiny.onnx : error KILN0024:", log);
        NoStackTrace(log);

        // Fixed, with no ClassName or Namespace: the class is named after the file, in the project's root namespace.
        File.WriteAllText(project, File.ReadAllText(project).Replace(" Passes=\"fold,,fuse{\"", ""));
        (code, log) = Build(dir);
        Assert.True(code == 0, log);
        var generated = File.ReadAllText(Path.Combine(dir, "obj", "Debug", "net10.0", "kiln", "Tiny", "Tiny.cs"));
        Assert.Contains("namespace Broken", generated);
        Assert.Contains("public sealed partial class Tiny ", generated);
    }

    [Fact]
    public void Class_names_are_validated_and_derived_as_the_cli_derives_them()
    {
        var dir = App("Names", """<KilnModel Include="Models/tiny.onnx" ClassName="My-Model" />""", "Console.WriteLine();");
        var project = Path.Combine(dir, "Names.csproj");
        // One KILN error naming the class, at the model file, and no C# compiler errors behind it.
        foreach (var (metadata, message) in new[]
                 {
                     ("ClassName=\"My-Model\"", "class name 'My-Model' cannot be used"),
                     ("ClassName=\"class\"", "class name 'class' cannot be used: it is a C# keyword"),
                     ("ClassName=\"Tiny\" Namespace=\"My App\"", "namespace 'My App' cannot be used"),
                 })
        {
            File.WriteAllText(project, System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(project), "<KilnModel [^>]*/>", $"<KilnModel Include=\"Models/tiny.onnx\" {metadata} />"));
            var (code, log) = Build(dir);
            Assert.NotEqual(0, code);
            Assert.Contains($"Models/tiny.onnx : error KILN0028: {message}", log);
            Assert.InRange(CountOf(log, "error KILN0028"), 1, 2); // once, and once more in MSBuild's summary
            Assert.DoesNotContain("error CS", log);
        }

        // Two models with one class: the second is an error, not silently dropped.
        File.Copy(Path.Combine(dir, "Models", "tiny.onnx"), Path.Combine(dir, "Models", "my-model.onnx"));
        File.WriteAllText(project, System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(project), "<KilnModel [^>]*/>",
            """<KilnModel Include="Models/tiny.onnx" ClassName="MyModel" /><KilnModel Include="Models/my-model.onnx" />"""));
        var (dupCode, dupLog) = Build(dir);
        Assert.NotEqual(0, dupCode);
        Assert.Contains("Models/my-model.onnx : error KILN0028: class 'MyModel' is already generated from Models/tiny.onnx", dupLog);

        // The default class of my-model.onnx is the CLI's (CompileCommandTests: kiln compile names it MyModel too).
        File.WriteAllText(project, System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(project), "<KilnModel .*/>", """<KilnModel Include="Models/my-model.onnx" />"""));
        var (okCode, okLog) = Build(dir);
        Assert.True(okCode == 0, okLog);
        Assert.Contains("public sealed partial class MyModel ", File.ReadAllText(Path.Combine(dir, "obj", "Debug", "net10.0", "kiln", "MyModel", "MyModel.cs")));
    }

    /// <summary>Two lines (the file-blob and the embedded-blob class) of the model's probabilities, each equal to ONNX Runtime's and the evaluator's.</summary>
    private static void AssertMatchesOnnxRuntimeAndEvaluator(string printed)
    {
        using var model = OnnxImporter.Import(TinyMlp);
        var inputs = new Dictionary<string, object?> { ["x"] = Tensor.FromArray(DType.F32, [2, 16], Input) };
        var expected = new Evaluator.Interpreter(model.Graph).Run(inputs);
        var want = ((Tensor)expected["probs"]!).Span<float>().ToArray();
        var ort = OrtRunner.RunModel(model, inputs)["probs"];
        for (var i = 0; i < want.Length; i++) Assert.True(Math.Abs(ort[i] - want[i]) <= 1e-5, $"[{i}] evaluator {want[i]} vs ONNX Runtime {ort[i]}");
        var lines = printed.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(2, lines.Length);
        foreach (var line in lines)
        {
            var got = line.Split(' ').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(want.Length, got.Length);
            for (var i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - want[i]) <= 1e-5, $"[{i}] {got[i]} vs {want[i]}");
        }
    }

    private static void NoStackTrace(string log)
    {
        Assert.DoesNotContain("   at ", log);
        Assert.DoesNotContain("KILN0099", log);
        Assert.DoesNotContain("MSB4018", log); // MSBuild's "the task failed unexpectedly" (an exception escaped)
    }

    private static int CountOf(string text, string part)
    {
        var n = 0;
        for (var at = text.IndexOf(part, StringComparison.Ordinal); at >= 0; at = text.IndexOf(part, at + part.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>The tiny MLP with its Relu node's op renamed to Fooo, an op no ONNX domain defines (same length: the protobuf stays valid).</summary>
    private static byte[] UnsupportedOpModel()
    {
        var bytes = File.ReadAllBytes(TinyMlp);
        var at = bytes.AsSpan().IndexOf("Relu"u8);
        Assert.True(at >= 0 && bytes.AsSpan(at + 4).IndexOf("Relu"u8) < 0, "the tiny MLP names Relu once");
        "Fooo"u8.CopyTo(bytes.AsSpan(at));
        return bytes;
    }
}
