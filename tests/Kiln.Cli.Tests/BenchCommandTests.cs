using System.Text.Json;
using Kiln.Cli.Bench;
using Kiln.Ir;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary>
/// The <c>kiln bench --json</c> contract (docs/bench.md): the documented fields are required, with their types and
/// meaning; more fields are allowed. No timing is asserted.
/// </summary>
public sealed class BenchCommandTests
{
    private static readonly string[] Engines = ["kiln", "baseline", "ort"];

    [Fact]
    public void Bench_json_on_a_decoder_against_a_baseline_and_onnx_runtime_follows_the_schema()
    {
        var model = Fixtures.Model("stories260k/model.onnx");
        var r = CliRunner.Run("bench", model, "--ort", "--baseline-passes", "fold,dce,cse,fuse,quantize{bits=4}", "--rounds", "1", "--json");
        Assert.True(r.ExitCode == 0, r.StdErr);
        using var doc = JsonDocument.Parse(r.StdOut); // stdout is the one JSON object and nothing else
        var root = doc.RootElement;
        Assert.Equal(model, root.GetProperty("model").GetString());
        Assert.Equal("fold,dce,cse,fuse", root.GetProperty("passes").GetString());
        Assert.Equal("fold,dce,cse,fuse,quantize{bits=4}", root.GetProperty("baseline_passes").GetString());
        Assert.Equal("copy", root.GetProperty("weights").GetString());
        foreach (var e in Engines) Assert.Contains(root.GetProperty("pages").GetProperty(e).GetString(), new[] { "huge", "plain" });
        Assert.True(root.GetProperty("threads").GetInt32() >= 1);
        Assert.True(root.GetProperty("fully_planned").GetBoolean());
        var ort = root.GetProperty("ort");
        Assert.Matches(@"^\d+\.\d+\.\d+", ort.GetProperty("version").GetString());
        Assert.Equal("all", ort.GetProperty("graph_optimization").GetString());
        Assert.Equal(root.GetProperty("threads").GetInt32(), ort.GetProperty("threads").GetInt32());
        Assert.Equal(JsonValueKind.True, ort.GetProperty("spinning").ValueKind);

        var results = root.GetProperty("results").EnumerateArray().ToDictionary(x => x.GetProperty("metric").GetString()!);
        Assert.Equal(["decode", "prefill_last_position", "prefill_same_work"], results.Keys.Order().ToArray());
        foreach (var (metric, x) in results)
        {
            Assert.Equal(metric == "decode" ? "tokens/s" : "ms", x.GetProperty("unit").GetString());
            foreach (var e in Engines)
            {
                var f = x.GetProperty(e);
                if (metric == "prefill_last_position" && e == "ort")
                {
                    Assert.Equal(JsonValueKind.Null, f.ValueKind); // ONNX Runtime computes every position: not the same work
                    continue;
                }
                var (min, median, max) = (f.GetProperty("min").GetDouble(), f.GetProperty("median").GetDouble(), f.GetProperty("max").GetDouble());
                Assert.True(0 < min && min <= median && median <= max, $"{metric} {e}: {min} {median} {max}");
            }
            var kilnMedian = x.GetProperty("kiln").GetProperty("median").GetDouble();
            var baselineMedian = x.GetProperty("baseline").GetProperty("median").GetDouble();
            var expected = metric == "decode" ? kilnMedian / baselineMedian : baselineMedian / kilnMedian;
            Assert.Equal(expected, x.GetProperty("ratio_vs_baseline").GetDouble(), 9);
            Assert.Equal(metric == "prefill_last_position" ? JsonValueKind.Null : JsonValueKind.Number, x.GetProperty("ratio_vs_ort").ValueKind);
        }
        // Same work: every engine computed all 128 positions' logits; generation's prefill computes one.
        var same = results["prefill_same_work"].GetProperty("logit_rows");
        foreach (var e in Engines) Assert.Equal(128, same.GetProperty(e).GetInt32());
        var last = results["prefill_last_position"].GetProperty("logit_rows");
        Assert.Equal(1, last.GetProperty("kiln").GetInt32());
        Assert.Equal(JsonValueKind.Null, last.GetProperty("ort").ValueKind);
        Assert.Equal(JsonValueKind.Null, results["decode"].GetProperty("logit_rows").ValueKind);

        // Each engine's own bytes: the 4-bit baseline reads far less than the float engines.
        var bytes = root.GetProperty("bytes_per_token");
        Assert.True(bytes.GetProperty("baseline").GetInt64() * 4 < bytes.GetProperty("ort").GetInt64());
        Assert.InRange(bytes.GetProperty("kiln").GetInt64(), bytes.GetProperty("ort").GetInt64() * 0.99, bytes.GetProperty("ort").GetInt64() * 1.01);
        foreach (var e in Engines) Assert.True(root.GetProperty("bandwidth_share").GetProperty(e).GetDouble() > 0);
        Assert.Equal(0, root.GetProperty("allocated_bytes_per_decode_step").GetInt64());
    }

    [Fact]
    public void KILN_PROFILE_times_each_node_of_a_planned_decoder()
    {
        var r = CliRunner.RunWith(new Dictionary<string, string> { ["KILN_PROFILE"] = "1" }, "bench", Fixtures.Model("stories260k/model.onnx"), "--rounds", "1");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Contains("(fully planned)", r.StdOut);
        var output = r.StdOut + r.StdErr;
        // The node's name, its op and its input types with their symbolic dims.
        Assert.Contains("Kiln time by node of the planned code", output);
        Assert.Matches(@"\d+ calls  /model/layers\.\d/attention/GroupQueryAttention \(kiln:GroupQueryAttention\) f32\[batch, 8, seq, 8\]", output);
        Assert.Matches(@"kiln:GroupQueryAttention\s+\d+ calls", output);
    }

    [Fact]
    public void Bench_json_on_a_model_that_is_not_a_decoder_reports_latency()
    {
        var r = CliRunner.Run("bench", Fixtures.Model("paddleocr/cls/model.onnx"), "--ort", "--rounds", "1", "--json", "--pages", "plain", "--weights", "map");
        Assert.True(r.ExitCode == 0, r.StdErr);
        using var doc = JsonDocument.Parse(r.StdOut);
        var root = doc.RootElement;
        Assert.Equal(JsonValueKind.Null, root.GetProperty("baseline_passes").ValueKind);
        Assert.Equal("map", root.GetProperty("weights").GetString());
        Assert.Equal("plain", root.GetProperty("pages").GetProperty("kiln").GetString());
        Assert.Equal("plain", root.GetProperty("pages").GetProperty("ort").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("pages").GetProperty("baseline").ValueKind);
        var result = Assert.Single(root.GetProperty("results").EnumerateArray());
        Assert.Equal("latency", result.GetProperty("metric").GetString());
        Assert.Equal("ms", result.GetProperty("unit").GetString());
        Assert.Equal(JsonValueKind.Null, result.GetProperty("baseline").ValueKind);
        Assert.Equal(JsonValueKind.Null, result.GetProperty("ratio_vs_baseline").ValueKind);
        Assert.True(result.GetProperty("ratio_vs_ort").GetDouble() > 0);
        Assert.Equal(JsonValueKind.Object, root.GetProperty("bytes_per_token").ValueKind);
        Assert.Equal(JsonValueKind.Object, root.GetProperty("bandwidth_share").ValueKind);
    }

    [Fact]
    public void Decode_traffic_counts_one_row_of_an_untied_embedding_and_every_byte_of_other_weights()
    {
        var m = KirParser.ParseModel("""
            graph @g(%ids: i64[1, 1]) -> (%y: f32[1, 1, 2]) {
              const @table: f32[4, 3] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
              const @w: f32[3, 2] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
              %e: f32[1, 1, 3] = Gather(@table, %ids)
              %y: f32[1, 1, 2] = MatMul(%e, @w)
            }
            """);
        Assert.Equal(3 * 4 + 6 * 4, DecodeTraffic.BytesPerToken(m.Graph));
        // Tied: the same table is also a product's weight, so every byte of it is read.
        var tied = KirParser.ParseModel("""
            graph @g(%ids: i64[1]) -> (%y: f32[1, 4]) {
              const @table: f32[4, 3] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
              %e: f32[1, 3] = Gather(@table, %ids)
              %y: f32[1, 4] = Gemm(%e, @table) {transB=1}
            }
            """);
        Assert.Equal(12 * 4, DecodeTraffic.BytesPerToken(tied.Graph));
    }
}
