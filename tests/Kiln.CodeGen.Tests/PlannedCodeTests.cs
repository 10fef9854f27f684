using Kiln.Compiler;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>Planned code (arena slots, views, fused elementwise loops) against the reference evaluator on small graphs.</summary>
public sealed class PlannedCodeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-planned-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Every fusable op in one chain, with one-element constants and a second full-size input; n = 37 leaves a
    // tail after the 8-wide vectors. The Reshape is a view; the chain ends in a graph output.
    private const string Chain = """
        graph @chain(%x: f32[n], %y: f32[n]) -> (%out: f32[n], %side: f32[n]) {
          const @half: f32[] = [0.5]
          const @one: f32[1] = [1.0]
          const @shape: i64[1] = [-1]
          %a: f32[n] = Mul(%x, %y)
          %b: f32[n] = Add(%a, @half)
          %s: f32[n] = Sigmoid(%b)
          %c: f32[n] = Sub(%s, @half)
          %r: f32[n] = Relu(%c)
          %ng: f32[n] = Neg(%r)
          %e: f32[n] = Exp(%ng)
          %q: f32[n] = Add(%y, @one)
          %sq: f32[n] = Sqrt(%q)
          %d: f32[n] = Div(%e, %sq)
          %cs: f32[n] = Cos(%d)
          %sn: f32[n] = Sin(%cs)
          %si: f32[n] = kiln:SiLU(%sn)
          %v: f32[n] = Reshape(%si, @shape)
          %out: f32[n] = Mul(%v, %x)
          %side: f32[n] = Add(%a, %x)
        }
        """;

    [Fact]
    public void The_compile_result_and_report_count_the_generic_operator_calls()
    {
        const string planned = """
            graph @g(%x: f32[n, 4]) -> (%y: f32[n, 4]) {
              %t: f32[n, 4] = Transpose(%x) {perm=[0, 1]}
              %y: f32[n, 4] = Relu(%t)
            }
            """;
        // Hardmax has no planned kernel: one generic call where it stands, the Transpose and Relu stay planned.
        var generic = planned.Replace("%y: f32[n, 4] = Relu(%t)", "%s: f32[n, 4] = Hardmax(%t) {axis=-1} loc(\"hm\")\n  %y: f32[n, 4] = Relu(%s)")
            .Replace("graph @g(", "graph @h(");
        using var a = KirParser.ParseModel(planned);
        using var b = KirParser.ParseModel(generic);
        var fully = ModelCompiler.Compile(a, "planned.kir", new CompileOptions { Passes = "dce", Verify = false });
        var partly = ModelCompiler.Compile(b, "generic.kir", new CompileOptions { Passes = "dce", Verify = false });
        Assert.Equal(0, fully.GenericCalls);
        Assert.True(fully.FullyPlanned);
        Assert.Equal(1, partly.GenericCalls);
        Assert.False(partly.FullyPlanned);
        var report = ModelCompiler.Report(partly, 0);
        Assert.Contains("- generic operator calls: 1\n", report);
        Assert.Contains("- generic operator call: node 'hm' (Hardmax): no planned kernel for Hardmax\n", report);
    }

    [Fact]
    public void A_sparse_matrix_whose_parts_disagree_is_not_given_to_the_planned_kernel()
    {
        // One panel of 2 outputs over 2 inputs: masks 0b11 and 0b01 hold 3 values. The planned kernel trusts what it
        // reads, so the planner checks the constants; panel starts that claim 4 values send the node to its operator
        // entry, which refuses it when it runs.
        const string text = """
            graph @g(%x: f32[n, 2]) -> (%y: f32[n, 2]) {
              const @masks: u32[1, 2] = [3, 1]
              const @values: f32[19] = [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
              const @starts: i32[2] = [0, STARTS]
              %y: f32[n, 2] = kiln:SparseMatMul(%x, @masks, @values, @starts) {rows=2} loc("sp")
            }
            """;
        using var good = KirParser.ParseModel(text.Replace("STARTS", "3"));
        using var bad = KirParser.ParseModel(text.Replace("STARTS", "4"));
        Assert.Equal(0, ModelCompiler.Compile(good, "good.kir", new CompileOptions { Passes = "dce", Verify = false }).GenericCalls);
        var refused = ModelCompiler.Compile(bad, "bad.kir", new CompileOptions { Passes = "dce", Verify = false });
        Assert.Equal(1, refused.GenericCalls);
        Assert.Contains("node 'sp' (kiln:SparseMatMul): a sparse matrix's masks hold 3 non-zeros", ModelCompiler.Report(refused, 0));
    }

    [Fact]
    public void Nodes_without_a_planned_kernel_run_through_their_operator_entries_inside_planned_code()
    {
        // Hardmax reads an arena value (copied into a tensor) and TopK has two outputs: both run as operator entries;
        // the planned Transpose, Relu and Add read their tensors. Results are the evaluator's.
        const string text = """
            graph @g(%x: f32[n, 4]) -> (%y: f32[n, 2], %i: i64[n, 2]) {
              const @two: i64[1] = [2]
              %t: f32[n, 4] = Transpose(%x) {perm=[0, 1]}
              %h: f32[n, 4] = Hardmax(%t) {axis=-1}
              %r: f32[n, 4] = Add(%h, %x)
              %v: f32[n, 2], %i: i64[n, 2] = TopK(%r, @two) {axis=-1}
              %y: f32[n, 2] = Relu(%v)
            }
            """;
        using var model = KirParser.ParseModel(text);
        using var reference = KirParser.ParseModel(text);
        using var runner = CompiledRunner.CompileInMemory(model, "fallback.kir", new CompileOptions { Passes = "dce" }, _dir);
        var source = File.ReadAllText(Directory.GetFiles(_dir, "*.cs", SearchOption.AllDirectories).Single());
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(source, @"Generated\.Call\(").Count);
        Assert.Contains("_arena.Slot", source);
        var rng = new Random(5);
        var x = Tensor.FromArray(DType.F32, [5, 4], Enumerable.Range(0, 20).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray());
        var got = runner.Run(new Dictionary<string, object?> { ["x"] = x });
        var want = new Interpreter(reference.Graph).Run(new Dictionary<string, object?> { ["x"] = x });
        Assert.Equal(((Tensor)want["y"]!).Span<float>().ToArray(), ((Tensor)got["y"]!).Span<float>().ToArray());
        Assert.Equal(((Tensor)want["i"]!).Span<long>().ToArray(), ((Tensor)got["i"]!).Span<long>().ToArray());
    }

    [Fact]
    public void Weights_named_like_the_generated_class_s_own_fields_compile_and_run()
    {
        // Weight fields are named after IR names; these would be _arena, _blob, _budget, _gate and _disposed without a prefix.
        const string text = """
            graph @g(%x: f32[n, 2]) -> (%y: f32[n, 2]) {
              const @arena: f32[2, 2] = [1, 2, 3, 4]
              const @blob: f32[2] = [0.5, -0.5]
              const @budget: f32[2, 2] = [1, 0, 0, 1]
              const @gate: f32[2] = [1, 1]
              const @disposed: f32[2] = [2, 2]
              %a: f32[n, 2] = MatMul(%x, @arena)
              %b: f32[n, 2] = Add(%a, @blob)
              %c: f32[n, 2] = MatMul(%b, @budget)
              %d: f32[n, 2] = Mul(%c, @gate)
              %y: f32[n, 2] = Add(%d, @disposed)
            }
            """;
        using var model = KirParser.ParseModel(text);
        using var runner = CompiledRunner.CompileInMemory(model, "names.kir", new CompileOptions { Passes = "dce" }, _dir);
        var x = Tensor.FromArray(DType.F32, [1, 2], new[] { 1f, 1f });
        var y = ((Tensor)runner.Run(new Dictionary<string, object?> { ["x"] = x })["y"]!).Span<float>().ToArray();
        // [1, 1]·[[1, 2], [3, 4]] = [4, 6]; + [0.5, -0.5] = [4.5, 5.5]; ·I; ·1; + 2 = [6.5, 7.5].
        Assert.Equal(new[] { 6.5f, 7.5f }, y);
    }

    [Fact]
    public void A_fused_elementwise_chain_matches_onnx_runtime_and_the_evaluator()
    {
        using var model = KirParser.ParseModel(Chain);
        using var reference = KirParser.ParseModel(Chain);
        // ONNX Runtime has no kiln:SiLU: its graph spells it out as x·sigmoid(x).
        using var standard = KirParser.ParseModel(Chain.Replace("%si: f32[n] = kiln:SiLU(%sn)", "%sg: f32[n] = Sigmoid(%sn)\n  %si: f32[n] = Mul(%sn, %sg)"));
        standard.OpsetImports[""] = 21;
        using var runner = CompiledRunner.CompileInMemory(model, "chain.kir", new CompileOptions { Passes = "dce" }, _dir);
        var source = File.ReadAllText(Directory.GetFiles(_dir, "*.cs", SearchOption.AllDirectories).Single());
        Assert.Contains("// one loop for", source);
        Assert.Contains("ActivationArena", source);
        var rng = new Random(3);
        foreach (var n in new[] { 37, 8, 1 })
        {
            var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
            var y = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 3)).ToArray();
            var inputs = new Dictionary<string, object?> { ["x"] = Tensor.FromArray(DType.F32, [n], x), ["y"] = Tensor.FromArray(DType.F32, [n], y) };
            var want = new Interpreter(reference.Graph).Run(inputs);
            var ort = OrtRunner.RunModel(standard, inputs);
            var got = runner.Run(inputs);
            foreach (var name in new[] { "out", "side" })
            {
                var w = ((Tensor)want[name]!).Span<float>().ToArray();
                var o = ort[name];
                var g = ((Tensor)got[name]!).Span<float>().ToArray();
                Assert.Equal(n, g.Length);
                for (var i = 0; i < n; i++)
                {
                    Assert.True(Math.Abs(o[i] - g[i]) <= 1e-5 + 1e-5 * Math.Abs(o[i]), $"{name}[{i}] of {n}: {g[i]} vs ONNX Runtime {o[i]}");
                    Assert.True(Math.Abs(w[i] - g[i]) <= 1e-5 + 1e-5 * Math.Abs(w[i]), $"{name}[{i}] of {n}: {g[i]} vs the evaluator {w[i]}");
                }
            }
        }
    }

    // Rotary before the heads move forward: x [b, s, h, d] with cos/sin [1, s, 1, d/2] (positions along axis 1).
    private const string RotarySeqFirst = """
        graph @rope(%x: f32[b, s, 3, 8], %cos: f32[1, s, 1, 4], %sin: f32[1, s, 1, 4]) -> (%y: f32[b, s, 3, 8]) {
          %y: f32[b, s, 3, 8] = kiln:RotaryEmbedding(%x, %cos, %sin) {interleaved=1}
        }
        """;

    /// <summary>
    /// A consistency test (the planned kernel against the evaluator's; ONNX Runtime has no op with this layout), with
    /// the rotation written out here as a third opinion.
    /// </summary>
    [Fact]
    [Trait("Kind", "consistency")]
    public void Planned_rotary_reads_positions_along_the_axis_cos_varies_on()
    {
        using var model = KirParser.ParseModel(RotarySeqFirst);
        using var reference = KirParser.ParseModel(RotarySeqFirst);
        using var runner = CompiledRunner.CompileInMemory(model, "rope.kir", new CompileOptions { Passes = "dce" }, _dir);
        Assert.Contains("ActivationArena", File.ReadAllText(Directory.GetFiles(_dir, "*.cs", SearchOption.AllDirectories).Single()));
        var rng = new Random(5);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        // s = 3 = heads: reading positions along the heads axis would give the right shapes and wrong values.
        foreach (var (b, seq) in new[] { (2, 3), (1, 5), (1, 1) })
        {
            var inputs = new Dictionary<string, object?>
            {
                ["x"] = Tensor.FromArray(DType.F32, [b, seq, 3, 8], Random(b * seq * 24)),
                ["cos"] = Tensor.FromArray(DType.F32, [1, seq, 1, 4], Random(seq * 4)),
                ["sin"] = Tensor.FromArray(DType.F32, [1, seq, 1, 4], Random(seq * 4)),
            };
            var want = ((Tensor)new Interpreter(reference.Graph).Run(inputs)["y"]!).Span<float>().ToArray();
            var got = ((Tensor)runner.Run(inputs)["y"]!).Span<float>().ToArray();
            Assert.Equal(want, got);
            // Interleaved pairs (x0, x1) of each head turn by the angle of their position: cos/sin [1, s, 1, 4].
            var x = ((Tensor)inputs["x"]!).Span<float>();
            var cos = ((Tensor)inputs["cos"]!).Span<float>();
            var sin = ((Tensor)inputs["sin"]!).Span<float>();
            for (var i = 0; i < got.Length; i += 2)
            {
                int s = i / 24 % seq, pair = i % 8 / 2;
                float c = cos[s * 4 + pair], sn = sin[s * 4 + pair];
                Assert.Equal(x[i] * c - x[i + 1] * sn, got[i], 1e-5f);
                Assert.Equal(x[i] * sn + x[i + 1] * c, got[i + 1], 1e-5f);
            }
        }
    }
}
