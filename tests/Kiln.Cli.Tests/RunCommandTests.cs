using Kiln.Ir;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary>`kiln run` through the real process: results within tolerance exit 0; bad runtime input exits 1 with one clear message.</summary>
public sealed class RunCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-run-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static string Mlp => Path.Combine(Fixtures.RepoRoot, "examples", "tiny-mlp", "model.onnx");

    private string DataSet(string name, params (string File, string Tensor, TensorData Data)[] files)
    {
        var dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (var (file, tensor, data) in files) DataFile.WriteTensor(Path.Combine(dir, file), tensor, data);
        return dir;
    }

    /// <summary>Writes an ONNX model of one node <paramref name="op"/> reading one input; returns its path.</summary>
    private string OneNodeModel(string op, string nodeName, string input, TensorType inputType)
    {
        var g = new Graph("g");
        var x = g.AddInput(input, inputType);
        var n = g.AddNode(op, "", nodeName, [x], ["y"]);
        Ir.Inference.ShapeInference.Run(g);
        g.AddOutput(n.Outputs[0]!);
        using var model = new Model(g);
        model.OpsetImports[""] = 21;
        var path = Path.Combine(_dir, nodeName + ".onnx");
        OnnxExporter.Export(model, path);
        return path;
    }

    private static TensorData F32(long[] dims) => TensorData.FromArray(DType.F32, dims, new float[dims.Aggregate(1L, (a, b) => a * b)]);

    [Fact]
    public void Shared_model_data_set_runs_within_tolerance()
    {
        var r = CliRunner.Run("run", Fixtures.Model("llama-tiny-random/model.onnx"), "--data", Fixtures.Model("llama-tiny-random"), "--atol", "1e-4", "--rtol", "0");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("logits: max abs", r.StdOut);
        Assert.Contains("test_data_set_1", r.StdOut);
    }

    [Fact]
    public void Out_of_tolerance_exits_1()
    {
        var r = CliRunner.Run("run", Fixtures.Model("stories260k/model-nocache.onnx"), "--data", Fixtures.Model("stories260k/test_data_set_0"), "--atol", "0", "--rtol", "0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("FAIL", r.StdOut);
    }

    /// <summary>Largest "max abs" error printed for an output.</summary>
    private static double MaxAbs(string stdout) =>
        stdout.Split('\n').Where(l => l.Contains("max abs", StringComparison.Ordinal))
            .Max(l => double.Parse(l.Split("max abs ")[1].Split(',')[0], System.Globalization.CultureInfo.InvariantCulture));

    [Fact]
    public void Passes_run_on_the_interpreter_too()
    {
        string[] data = ["--data", Fixtures.Model("stories260k/test_data_set_0"), "--atol", "100", "--rtol", "0"];
        var model = Fixtures.Model("stories260k/model-nocache.onnx");
        var plain = CliRunner.Run(["run", model, .. data]);
        var quantized = CliRunner.Run(["run", model, .. data, "--passes", "fold,quantize{bits=4}"]);
        var compiled = CliRunner.Run(["run", model, .. data, "--passes", "fold,quantize{bits=4}", "--engine", "compiled"]);
        Assert.True(plain.ExitCode == 0 && quantized.ExitCode == 0 && compiled.ExitCode == 0, plain.StdErr + quantized.StdErr + compiled.StdErr);
        // The float model's error is rounding; the int4 model's is the quantization's, the same in both engines.
        Assert.True(MaxAbs(plain.StdOut) < 1e-3, plain.StdOut);
        Assert.True(MaxAbs(quantized.StdOut) > 100 * MaxAbs(plain.StdOut), quantized.StdOut);
        Assert.Equal(MaxAbs(compiled.StdOut), MaxAbs(quantized.StdOut), 1e-3);
    }

    [Fact]
    public void Calibration_without_passes_on_the_interpreter_is_noted()
    {
        var r = CliRunner.Run("run", Fixtures.Model("stories260k/model-nocache.onnx"), "--data", Fixtures.Model("stories260k/test_data_set_0"),
            "--calibration", Fixtures.Model("stories260k/calib_tokens.pb"), "--atol", "1e-3");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("was not used", r.StdErr);
    }

    [Theory]
    [InlineData("shape", "input 'x': expected shape [batch, 16], got [2, 15] (dim 1 must be 16)")]
    [InlineData("type", "input 'x': expected element type f32, got i64")]
    [InlineData("missing", "input 'x' (f32[batch, 16]) is missing")]
    public void Bad_runtime_input_exits_1_with_one_clear_message(string kind, string message)
    {
        var set = kind switch
        {
            "shape" => DataSet(kind, ("input_0.pb", "x", F32([2, 15])), ("output_0.pb", "probs", F32([2, 4]))),
            "type" => DataSet(kind, ("input_0.pb", "x", TensorData.Int64([2, 16], new long[32])), ("output_0.pb", "probs", F32([2, 4]))),
            _ => Path.GetDirectoryName(DataSet(Path.Combine(kind, "test_data_set_0"), ("output_0.pb", "probs", F32([2, 4]))))!,
        };
        var r = CliRunner.Run("run", Mlp, "--data", set);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.StdErr);
        Assert.Contains("KILN0021", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    [Fact]
    public void Unsupported_op_at_run_time_exits_1_naming_the_op()
    {
        // DFT imports (the IR knows it) but the evaluator has no kernel for it yet.
        var path = OneNodeModel("DFT", "spectrum", "x", new TensorType(DType.F32, Shape.Of(1, 4, 1)));
        var set = DataSet("dft", ("input_0.pb", "x", F32([1, 4, 1])));
        var r = CliRunner.Run("run", path, "--data", set);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("KILN0005", r.StdErr);
        Assert.Contains("DFT: 1 node ('spectrum')", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    [Fact]
    public void Hostile_shape_is_refused_by_the_memory_budget()
    {
        var path = OneNodeModel("ConstantOfShape", "fill", "shape", new TensorType(DType.I64, Shape.Of(3)));
        var set = DataSet("fill", ("input_0.pb", "shape", TensorData.Int64([3], 2750, 1000, 1000)));
        var r = CliRunner.Run("run", path, "--data", set, "--memory-budget-gb", "2");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("KILN0022", r.StdErr);
        Assert.Contains("f32[2750, 1000, 1000]", r.StdErr);
    }

    /// <summary>ConstantOfShape(shape input) as an ONNX model, with a data set asking for <paramref name="dims"/>.</summary>
    private (string Model, string Data) FillModel(string name, params long[] dims)
    {
        using var model = KirParser.ParseModel("""
            graph @fill(%shape: i64[3]) -> (%y: f32[?, ?, ?]) {
              %y: f32[?, ?, ?] = ConstantOfShape(%shape) {value=tensor f32[1] [1.0]} loc("fill")
            }
            """);
        model.OpsetImports[""] = 21;
        var path = Path.Combine(_dir, name + ".onnx");
        OnnxExporter.Export(model, path);
        return (path, DataSet(name, ("input_0.pb", "shape", TensorData.Int64([3], dims)), ("output_0.pb", "y", F32([1, 1, 1]))));
    }

    [Fact]
    public void A_compiled_run_over_its_memory_budget_is_refused_with_KILN0022()
    {
        var (model, data) = FillModel("fill16", 400, 1000, 1000); // 1.6 GB
        var r = CliRunner.Run("run", model, "--data", data, "--engine", "compiled", "--memory-budget-gb", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("KILN0022", r.StdErr);
        Assert.Contains("memory budget of 1.0 GiB", r.StdErr);
    }

    [Theory]
    [InlineData("interpreter")]
    [InlineData("compiled")]
    public void The_default_budget_refuses_an_11_GB_ConstantOfShape_in_both_engines(string engine)
    {
        var (model, data) = FillModel("fill11-" + engine, 2750, 1000, 1000);
        var r = CliRunner.Run("run", model, "--data", data, "--engine", engine);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("KILN0022", r.StdErr);
        Assert.Contains("f32[2750, 1000, 1000]", r.StdErr);
    }
}
