using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime;
using Kiln.TestSupport;

namespace Kiln.CodeGen.Tests;

/// <summary>Models compiled to C#, built with Roslyn and run: same answers as the reference outputs, deterministic output, clear errors.</summary>
public sealed class CompiledModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-codegen-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private CompiledRunner Compile(string modelPath, string? passes = null)
    {
        using var m = OnnxImporter.Import(modelPath);
        return CompiledRunner.CompileInMemory(m, modelPath, new CompileOptions { Passes = passes }, Path.Combine(_dir, Guid.NewGuid().ToString("N")));
    }

    [Theory]
    [MemberData(nameof(Fixtures.SharedDataSetRows), MemberType = typeof(Fixtures))]
    public void Compiled_model_reproduces_the_reference_outputs(string model, string dataSet, double atol, double rtol)
    {
        using var graph = OnnxImporter.Import(Fixtures.Model(model));
        using var runner = Compile(Fixtures.Model(model));
        var checks = DataSets.Check(runner, graph.Graph, Fixtures.Model(dataSet), atol, rtol);
        Assert.NotEmpty(checks);
        Assert.All(checks, c => Assert.True(c.Ok, $"{c.Name}: {c.Problem} (max abs {c.MaxAbs})"));
    }

    [Fact]
    public void Compiled_stories260k_with_the_kv_cache_generates_the_200_greedy_tokens()
    {
        var expected = File.ReadAllLines(Fixtures.Model("stories260k/greedy_200.txt")).First(l => l.Length > 0 && !l.StartsWith('#'))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        using var runner = Compile(Fixtures.Model("stories260k/model.onnx"));
        var model = runner.Model;
        var inputs = new object?[model.InputNames.Count];
        for (var i = 1; i < inputs.Length; i++) inputs[i] = Tensor.Zeros(DType.F32, [1, 4, 0, 8]);
        var token = 1L;
        var got = new List<long>();
        for (var step = 0; step < expected.Length; step++)
        {
            inputs[0] = Tensor.FromArray(DType.I64, [1, 1], new[] { token });
            var outs = model.RunValues(inputs);
            var logits = (Tensor)outs[0]!;
            token = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Span<float>()[^logits.Shape[^1]..]);
            got.Add(token);
            for (var i = 1; i < inputs.Length; i++) inputs[i] = outs[i];
        }
        Assert.Equal(expected, got);
    }

    /// <summary>A consistency test: the planned prefill (last rows only) against a full step of the same code.</summary>
    [Fact]
    [Trait("Kind", "consistency")]
    public void Prefill_computes_only_the_last_logits_and_they_equal_a_full_steps()
    {
        long[] prompt = [1, 403, 407, 261, 378, 99, 12, 500, 7, 300];
        using var runner = Compile(Fixtures.Model("stories260k/model.onnx"));
        Assert.IsAssignableFrom<Runtime.Decoding.IPlannedDecoder>(runner.Model);
        using var a = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 64 });
        using var b = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 64 });
        var last = a.Prefill(prompt).ToArray();
        var full = b.Step(prompt, prompt.Length).ToArray();
        Assert.Equal(512, last.Length);
        Assert.Equal(prompt.Length * 512, full.Length);
        for (var i = 0; i < 512; i++) Assert.Equal(full[full.Length - 512 + i], last[i], 1e-5f);
        // Both caches hold the same keys and values: the next token's logits agree too.
        var next = a.Decode(5).ToArray();
        var next2 = b.Decode(5).ToArray();
        for (var i = 0; i < 512; i++) Assert.Equal(next2[i], next[i], 1e-5f);
    }

    /// <summary>
    /// A consistency test: Kiln's two engines on one compressed model (ONNX Runtime cannot run Kiln's compressed ops).
    /// The f32 models are compared with reference outputs in <see cref="Compiled_model_reproduces_the_reference_outputs"/>.
    /// </summary>
    /// <remarks>
    /// Not bit for bit: attention's reductions add in an order that depends on buffer alignment, and a difference of
    /// one ulp upstream flips an activation code now and then (dynamic int8 rounding turns it into one step, ~1e-3 of
    /// the output), which later layers carry on. How many flip depends on the f32 arithmetic upstream (the evaluator's
    /// attention products and the compiled fused attention round differently): with dynamic activations the mean
    /// difference is ~1.2e-3 of the logits. So: logits close on average (2e-3), the same next token almost everywhere.
    /// </remarks>
    [Theory]
    [InlineData("fold,dce,cse,fuse,quantize{bits=4 group=32}")]
    [InlineData("fold,dce,cse,fuse,quantize{bits=8 group=0}")]
    [InlineData("fold,dce,cse,fuse,smoothquant{alpha=0.5},quantize{bits=8},quantize-activations{bits=8 mode=dynamic}")]
    [InlineData("fold,dce,cse,fuse,smoothquant{alpha=0.5},quantize{bits=8},quantize-activations{bits=8 mode=static}")]
    [InlineData("fold,dce,cse,fuse,quantize-kv{bits=8}")]
    [Trait("Kind", "consistency")]
    public void Consistency_compiled_compressed_models_compute_what_the_evaluator_computes(string passes)
    {
        var path = Fixtures.Model("stories260k/model-nocache.onnx");
        var calibrationDir = Fixtures.Model("stories260k/test_data_set_0");
        Passes.CalibrationSet Calibration(Graph g) => new(calibrationDir, CalibrationFiles.Load(calibrationDir, g, Passes.CalibrationSet.RowsPerSample));
        using var reference = OnnxImporter.Import(path);
        Passes.PassManager.Run(reference, Passes.PassPipeline.Parse(passes), calibration: Calibration(reference.Graph));
        using var original = OnnxImporter.Import(path);
        using var toCompile = OnnxImporter.Import(path);
        using var runner = CompiledRunner.CompileInMemory(toCompile, path, new CompileOptions { Passes = passes, Calibration = Calibration(toCompile.Graph) }, Path.Combine(_dir, Guid.NewGuid().ToString("N")));
        var inputs = DataSets.ReadInputs(original.Graph, Fixtures.Model("stories260k/test_data_set_0"));
        var expected = (Tensor)new Evaluator.Interpreter(reference.Graph).Run(inputs)["logits"]!;
        var got = (Tensor)runner.Run(inputs)["logits"]!;
        Assert.Equal(expected.Shape, got.Shape);
        var e = expected.Span<float>().ToArray();
        var g = got.Span<float>().ToArray();
        var vocab = expected.Shape[^1];
        double diff = 0, magnitude = 0;
        for (var i = 0; i < e.Length; i++) { diff += Math.Abs(e[i] - g[i]); magnitude += Math.Abs(e[i]); }
        var rows = e.Length / vocab;
        var agree = Enumerable.Range(0, rows).Count(r => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(e.AsSpan(r * vocab, vocab)) == System.Numerics.Tensors.TensorPrimitives.IndexOfMax(g.AsSpan(r * vocab, vocab)));
        Assert.True(diff <= 2e-3 * magnitude, $"mean |compiled − evaluator| {diff / e.Length} against mean |logit| {magnitude / e.Length}");
        Assert.True(agree >= 0.99 * rows, $"the next token agrees on {agree} of {rows} positions");
    }

    /// <summary>
    /// A pruned decoder whose products (the classifier too) read bitmask panels decodes what the same pruned model
    /// with its zeros stored dense decodes: prefill (the last position's logits only) and decode steps.
    /// </summary>
    [Fact]
    public void A_decoder_with_sparse_weights_computes_what_its_dense_zeros_compute()
    {
        const string pruned = "fold,dce,cse,fuse,prune{method=magnitude pattern=2:4 embedding=true}";
        using var dense = Compile(Fixtures.Model("stories260k/model.onnx"), pruned);
        using var sparse = Compile(Fixtures.Model("stories260k/model.onnx"), pruned + ",sparse-weights{min_bytes=0}");
        // Every product reads panels: 35 layers and the classifier (the embedding lookup keeps its dense table).
        Assert.Equal(36, sparse.Blob!.Entries.Count(e => e.Name.EndsWith(".masks", StringComparison.Ordinal)));
        using var a = new Runtime.Decoding.DecoderSession(dense.Model, dense.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 64 });
        using var b = new Runtime.Decoding.DecoderSession(sparse.Model, sparse.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 64 });
        long[] prompt = [1, 403, 407, 261, 378, 99, 12, 500, 7, 300];
        var (x, y) = (a.Prefill(prompt).ToArray(), b.Prefill(prompt).ToArray());
        for (var step = 0; step < 8; step++)
        {
            for (var i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) <= 1e-4f * (1 + Math.Abs(x[i])), $"step {step}: logit {i} is {y[i]} sparse, {x[i]} dense");
            var token = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(x);
            (x, y) = (a.Decode(token).ToArray(), b.Decode(token).ToArray());
        }
    }

    /// <summary>
    /// Structured pruning leaves layers with different key/value head counts (heads=0.25 of the example's 2 groups per
    /// layer: 3 of its 5 layers keep one): a session's cache holds each layer's own heads, and decoding through it
    /// computes what whole-sequence runs of the same pruned model compute.
    /// </summary>
    [Fact]
    [Trait("Kind", "consistency")]
    public void A_decoder_whose_layers_keep_different_head_counts_decodes_through_its_cache()
    {
        var modelPath = Path.Combine(Fixtures.RepoRoot, "examples/text-generation/Models/kjv.onnx");
        using var runner = Compile(modelPath, "fold,dce,cse,fuse,prune-structured{heads=0.25 method=magnitude bias=false}");
        var layout = runner.Model.DecoderLayout!;
        Assert.Equal([1, 1, 1, 2, 2], layout.KvHeads.Order());
        var planned = Assert.IsAssignableFrom<Runtime.Decoding.IPlannedDecoder>(runner.Model);
        // A cache of one head count for every layer does not fit, and the step says how.
        var uniform = new Runtime.Decoding.KvCache(5, 1, 2, layout.HeadDim, 64);
        var wrong = Assert.Throws<ArgumentException>(() => planned.Step([1], 1, 1, uniform, new float[planned.VocabularySize]));
        Assert.Contains($"[{string.Join(", ", layout.KvHeads)}] heads × 32 for 1 row(s), got 5 layers × 2 heads × 32 for 1 row(s)", wrong.Message, StringComparison.Ordinal);
        using var session = new Runtime.Decoding.DecoderSession(runner.Model, layout, new Runtime.Decoding.DecoderOptions { MaxContext = 64 });
        var model = runner.Model;
        var vocab = ((Runtime.Decoding.IPlannedDecoder)model).VocabularySize;
        var tokens = new List<long> { 1, 403, 407, 261, 378, 99 };
        var fromCache = session.Prefill(tokens.ToArray()).ToArray();
        for (var step = 0; step < 6; step++)
        {
            var inputs = new object?[model.InputNames.Count];
            inputs[layout.InputIds] = Tensor.FromArray(DType.I64, [1, tokens.Count], tokens.ToArray());
            for (var layer = 0; layer < layout.PastKeys.Length; layer++)
                foreach (var k in new[] { layout.PastKeys[layer], layout.PastValues[layer] })
                    inputs[k] = Tensor.Zeros(DType.F32, [1, layout.KvHeads[layer], 0, layout.HeadDim]);
            var whole = ((Tensor)model.RunValues(inputs)[layout.Logits]!).Span<float>()[^vocab..].ToArray();
            for (var i = 0; i < vocab; i++) Assert.True(Math.Abs(whole[i] - fromCache[i]) <= 1e-4f * (1 + Math.Abs(whole[i])), $"step {step}: logit {i} is {fromCache[i]} through the cache, {whole[i]} from the whole sequence");
            var token = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(whole);
            tokens.Add(token);
            fromCache = session.Decode(token).ToArray();
        }
    }

    /// <summary>A consistency test: an int8 KV-cache session against whole-sequence runs of the same compressed model.</summary>
    [Fact]
    [Trait("Kind", "consistency")]
    public void An_int8_kv_cache_session_matches_whole_sequence_runs_that_round_keys_and_values_the_same_way()
    {
        using var runner = Compile(Fixtures.Model("stories260k/model.onnx"), "fold,dce,cse,fuse,quantize-kv{bits=8}");
        var planned = Assert.IsAssignableFrom<Runtime.Decoding.IPlannedDecoder>(runner.Model);
        Assert.Equal(8, planned.KvCacheBits);
        using var session = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 64 });
        // The reference: the same compiled model's Run (no cache object: f32 presents fed back, attention rounds them).
        var model = runner.Model;
        var inputs = new object?[model.InputNames.Count];
        for (var i = 1; i < inputs.Length; i++) inputs[i] = Tensor.Zeros(DType.F32, [1, 4, 0, 8]);
        long[] prompt = [1, 403, 407, 261, 378, 99];
        var fromCache = session.Prefill(prompt).ToArray();
        long token = 0;
        for (var step = 0; step < 20; step++)
        {
            inputs[0] = step == 0 ? Tensor.FromArray(DType.I64, [1, prompt.Length], prompt) : Tensor.FromArray(DType.I64, [1, 1], new[] { token });
            var outs = model.RunValues(inputs);
            var logits = ((Tensor)outs[0]!).Span<float>()[^512..].ToArray();
            for (var i = 0; i < 512; i++) Assert.True(Math.Abs(logits[i] - fromCache[i]) <= 1e-3f, $"step {step}: logit {i} is {fromCache[i]} from the int8 cache, {logits[i]} from the rounded run");
            for (var i = 1; i < inputs.Length; i++) inputs[i] = outs[i];
            token = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            fromCache = session.Decode(token).ToArray();
        }
    }

    [Fact]
    public void The_decoder_session_generates_the_greedy_tokens_and_refuses_to_run_past_its_context()
    {
        var expected = File.ReadAllLines(Fixtures.Model("stories260k/greedy_200.txt")).First(l => l.Length > 0 && !l.StartsWith('#'))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        using var runner = Compile(Fixtures.Model("stories260k/model.onnx"));
        Assert.NotNull(runner.Model.DecoderLayout);
        using var session = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 512 });
        Assert.Equal(expected, session.Generate([1L], 200).ToArray());
        Assert.Equal(200, session.Position); // the prompt and every generated token but the last, which was not fed back

        // Same seed, same text; another seed, another text.
        string Sample(int seed)
        {
            using var s = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { Seed = seed });
            return string.Join(" ", s.Generate([1L], 40, new Runtime.Decoding.TemperatureSampler(1.0f, topK: 40)));
        }
        Assert.Equal(Sample(7), Sample(7));
        Assert.NotEqual(Sample(7), Sample(8));

        using var small = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { MaxContext = 8 });
        small.Prefill([1L, 2, 3, 4, 5, 6]);
        small.Decode(7);
        small.Decode(8);
        var e = Assert.Throws<Runtime.Compiled.ModelRunException>(() => small.Decode(9));
        Assert.Contains("would exceed its MaxContext of 8", e.Message);
        Assert.Equal(8, small.Position);

        // Generate stops at a stop token without yielding it.
        using var stopping = new Runtime.Decoding.DecoderSession(runner.Model, runner.Model.DecoderLayout!, new Runtime.Decoding.DecoderOptions { StopTokens = [expected[5]] });
        Assert.Equal(expected[..5], stopping.Generate([1L], 200).ToArray());
    }

    [Fact]
    public void Compiling_the_same_model_twice_gives_byte_identical_code_and_blob()
    {
        string[] CompileTo(string dir)
        {
            using var m = OnnxImporter.Import(Fixtures.Model("stories260k/model.onnx"));
            var r = ModelCompiler.Compile(m, Fixtures.Model("stories260k/model.onnx"), new CompileOptions());
            return ModelCompiler.WriteFiles(r, Path.Combine(_dir, dir)).Where(p => !p.EndsWith(".md", StringComparison.Ordinal)).ToArray();
        }
        var a = CompileTo("a");
        var b = CompileTo("b");
        Assert.Equal(2, a.Length);
        for (var i = 0; i < a.Length; i++)
            Assert.True(File.ReadAllBytes(a[i]).AsSpan().SequenceEqual(File.ReadAllBytes(b[i])), $"{Path.GetFileName(a[i])} differs between two compiles");
    }

    private static Model Parse(string kir) => KirParser.ParseModel(kir, null, "test.kir");

    [Fact]
    public void Generated_code_names_each_node_and_builds_without_warnings()
    {
        using var m = Parse("""
            graph @mlp(%x: f32[n, 2]) -> (%y: f32[n, 2]) {
              const @w: f32[2, 2] = [1.0, 2.0, 3.0, 4.0]
              %h: f32[n, 2] = MatMul(%x, @w) loc("fc1/MatMul")
              %y: f32[n, 2] = Relu(%h) loc("act")
            }
            """);
        var r = ModelCompiler.Compile(m, "mlp.kir", new CompileOptions { Namespace = "Tests.Generated" });
        Assert.Equal("Mlp", r.ClassName);
        Assert.Contains("// fc1/MatMul: MatMul → %h", r.Source);
        Assert.Contains("// act: Relu → %y", r.Source);
        Assert.Contains("public Outputs Run(Tensor x)", r.Source);
        Assert.Contains("public sealed record Outputs(Tensor y);", r.Source);
        Assert.DoesNotContain("System.Reflection", r.Source);
        RoslynBuild.Compile("check", [("Mlp.cs", r.Source)]);
    }

    [Fact]
    public void Runtime_errors_name_the_node_and_bad_inputs_name_the_input()
    {
        using var m = Parse("""
            graph @pick(%table: f32[4, 2], %ids: i64[k]) -> (%rows: f32[k, 2]) {
              %rows: f32[k, 2] = Gather(%table, %ids) {axis=0} loc("embed/Gather")
            }
            """);
        using var runner = CompiledRunner.CompileInMemory(m, "pick.kir", new CompileOptions(), Path.Combine(_dir, "pick"));
        var table = Tensor.Zeros(DType.F32, [4, 2]);
        var bad = Assert.Throws<KilnException>(() => runner.Run(new Dictionary<string, object?> { ["table"] = table, ["ids"] = Tensor.FromArray(DType.I64, [1], new[] { 9L }) }));
        Assert.Equal(DiagnosticCode.RuntimeError, bad.Diagnostics[0].Code);
        Assert.Equal("embed/Gather", bad.Diagnostics[0].NodeName);
        Assert.Contains("9", bad.Message);
        var wrong = Assert.Throws<KilnException>(() => runner.Run(new Dictionary<string, object?> { ["table"] = Tensor.Zeros(DType.F32, [3, 2]), ["ids"] = Tensor.FromArray(DType.I64, [1], new[] { 0L }) }));
        Assert.Equal(DiagnosticCode.InputMismatch, wrong.Diagnostics[0].Code);
        Assert.Contains("input 'table': expected shape [4, 2], got [3, 2]", wrong.Message);
    }

    [Fact]
    public void Conformance_compiled_passes_as_many_cases_as_the_interpreter_in_every_group()
    {
        var interpreted = Conformance.Run([Fixtures.ConformanceRoot], null, null, new Evaluator.EvaluatorOptions(), TextWriter.Null);
        var compiled = Conformance.Run([Fixtures.ConformanceRoot], null, null, new Evaluator.EvaluatorOptions(), TextWriter.Null, Engines.Compiled);
        var passedInterpreted = interpreted.Where(r => r.Status == "pass").Select(r => r.Case).ToHashSet();
        var passedCompiled = compiled.Where(r => r.Status == "pass").Select(r => r.Case).ToHashSet();
        Assert.True(passedCompiled.Count > 1000, $"only {passedCompiled.Count} cases pass compiled");
        Assert.Empty(passedInterpreted.Except(passedCompiled));
    }
}
