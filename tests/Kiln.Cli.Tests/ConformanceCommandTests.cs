using Kiln.Ir;
using Kiln.Onnx;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary>`kiln conformance`: its time limit holds in both engines, so one case that never ends cannot hang the run.</summary>
public sealed class ConformanceCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-conformance-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>ONNX's test_loop11 case with a trip count of 10^15: a loop that would run for days.</summary>
    private string EndlessLoopCase()
    {
        var source = Path.Combine(Fixtures.ConformanceRoot, "node", "test_loop11");
        var dir = Path.Combine(_dir, "node", "test_loop11_endless");
        var set = Path.Combine(dir, "test_data_set_0");
        Directory.CreateDirectory(set);
        File.Copy(Path.Combine(source, "model.onnx"), Path.Combine(dir, "model.onnx"));
        foreach (var f in Directory.GetFiles(Path.Combine(source, "test_data_set_0"))) File.Copy(f, Path.Combine(set, Path.GetFileName(f)));
        DataFile.WriteTensor(Path.Combine(set, "input_0.pb"), "trip_count", TensorData.Int64([], 1_000_000_000_000_000));
        return _dir;
    }

    [Theory]
    [InlineData("interpreter")]
    [InlineData("compiled")]
    public void A_case_past_its_time_limit_fails_as_a_run_error_in_either_engine(string engine)
    {
        if (!Directory.Exists(Fixtures.ConformanceRoot)) return;
        var root = EndlessLoopCase();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var r = CliRunner.Run("conformance", root, "--engine", engine, "--time-limit", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("run-error", r.StdOut);
        Assert.Contains("time limit of 1 s", r.StdOut);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed}");
    }

    [Fact]
    public void A_negative_time_limit_is_refused()
    {
        var r = CliRunner.Run("conformance", _dir, "--time-limit", "-1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--time-limit", r.StdErr);
    }
}
