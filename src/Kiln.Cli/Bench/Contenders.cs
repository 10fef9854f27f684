using System.Diagnostics;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime;
using Kiln.Runtime.Compiled;
using Kiln.Runtime.Decoding;
using Microsoft.ML.OnnxRuntime;
using Kiln.Compiler;

namespace Kiln.Cli.Bench;

/// <summary>Which engine a figure belongs to: the Kiln pipeline under test, the Kiln baseline pipeline, ONNX Runtime.</summary>
public enum Role { Kiln, Baseline, Ort }

/// <summary>
/// One engine of a bench run, as the measures it offers: each returns one timed figure (ms, or tokens/s for
/// decode); a measure the engine does not offer is absent. Timed blocks start after <see cref="Settle"/>.
/// </summary>
internal abstract class Contender(Role role) : IDisposable
{
    public Role Role { get; } = role;

    /// <summary>Every position's logits for the prompt (what both engines can do), ms.</summary>
    public virtual Func<long[], double>? PrefillSameWork => null;

    /// <summary>The prompt as generation feeds it (only the last position's logits needed), ms.</summary>
    public virtual Func<long[], double>? PrefillLastPosition => null;

    /// <summary>Positions whose logits <see cref="PrefillLastPosition"/> computes for a prompt of the given length.</summary>
    public virtual int LastPositionLogitRows(int promptLength) => promptLength;

    /// <summary>Tokens/s over <see cref="Bench.DecodeTokens"/> greedy steps after a 16-token prompt.</summary>
    public virtual Func<long[], double>? Decode => null;

    /// <summary>One run on the data set's inputs (untimed: the caller times batches of runs).</summary>
    public virtual Action? Run => null;

    public abstract void Dispose();

    /// <summary>
    /// A pause before each timed block, so the other engine's thread pool has stopped spinning (both engines' idle
    /// workers spin briefly after each call; on two cores they would otherwise take turns slowing each other down).
    /// </summary>
    public static void Settle() => Thread.Sleep(50);

    public static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        a();
        return sw.Elapsed.TotalMilliseconds;
    }
}

/// <summary>A compiled Kiln model: a decoder driven by a <see cref="DecoderSession"/>, or any model run on a data set's inputs.</summary>
internal sealed class KilnContender : Contender
{
    private readonly CompiledRunner _runner;
    private readonly DecoderSession? _session;
    private IReadOnlyDictionary<string, object?>? _inputs;
    private readonly HashSet<object> _inputStorage = new(ReferenceEqualityComparer.Instance);
    // KILN_PROFILE: only the pipeline under test is profiled (a baseline's calls would mix in); "decode": decode steps
    // only; "prefill": prefills only.
    private readonly Dictionary<Action<Runtime.Operators.OpContext>, (int Calls, double Milliseconds)>? _profile;
    private readonly Dictionary<string, (int Calls, double Milliseconds)>? _profileByShape;
    private readonly Dictionary<Generated.NodeKey, (int Calls, double Milliseconds)>? _profileByNode;
    private readonly string? _profiledPhase;

    public KilnContender(Role role, CompiledRunner runner, bool profile) : base(role)
    {
        _runner = runner;
        if (runner.Model.DecoderLayout is { } layout)
            _session = new DecoderSession(runner.Model, layout, new DecoderOptions { MaxContext = Bench.PrefillTokens + Bench.DecodeTokens + 16 });
        if (profile)
        {
            _profile = [];
            _profileByShape = [];
            _profileByNode = [];
            var phase = Environment.GetEnvironmentVariable("KILN_PROFILE");
            _profiledPhase = phase is "decode" or "prefill" ? phase : null;
        }
    }

    /// <summary>The data set's inputs, for models that are not decoders.</summary>
    public void SetInputs(IReadOnlyDictionary<string, object?> inputs)
    {
        _inputs = inputs;
        foreach (var t in inputs.Values.OfType<Tensor>()) _inputStorage.Add(t.Storage);
    }

    /// <summary>
    /// With KILN_PROFILE: the measured rounds' time by operator; then by operator and input shapes (operators the
    /// general path calls) and by node (planned code: decoders' steps), the 15 slowest of each.
    /// </summary>
    public void PrintProfile(TextWriter o)
    {
        if (_profile is null || _profileByNode is null) return;
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var byOp = _profile.Select(p => (Op: Runtime.Operators.OperatorTable.NameOf(p.Key), p.Value.Calls, p.Value.Milliseconds))
            .Concat(_profileByNode.Select(p => (p.Key.Op, p.Value.Calls, p.Value.Milliseconds)))
            .GroupBy(p => p.Op).Select(g => (Op: g.Key, Calls: g.Sum(p => p.Calls), Milliseconds: g.Sum(p => p.Milliseconds))).ToList();
        o.WriteLine("Kiln time by operator (all calls of the measured rounds):");
        foreach (var (op, calls, ms) in byOp.OrderByDescending(p => p.Milliseconds).Take(15))
            o.WriteLine($"  {op,-22} {calls,8} calls {ms.ToString("0.0", inv),10} ms");
        if (_profileByShape is { Count: > 0 })
        {
            o.WriteLine("Kiln time by operator and input shapes (the 15 slowest):");
            foreach (var (key, (calls, ms)) in _profileByShape.OrderByDescending(p => p.Value.Milliseconds).Take(15))
                o.WriteLine($"  {ms.ToString("0.0", inv),10} ms {calls,8} calls  {key}");
        }
        if (_profileByNode.Count > 0)
        {
            o.WriteLine("Kiln time by node of the planned code (the 15 slowest):");
            foreach (var (key, (calls, ms)) in _profileByNode.OrderByDescending(p => p.Value.Milliseconds).Take(15))
                o.WriteLine($"  {ms.ToString("0.0", inv),10} ms {calls,8} calls  {key.Node} ({key.Op}) {key.Inputs}");
        }
    }

    public void ClearProfile()
    {
        _profile?.Clear();
        _profileByShape?.Clear();
        _profileByNode?.Clear();
    }

    /// <summary>Times <paramref name="a"/>, profiled when profiling is on (only the phase KILN_PROFILE names, when it names one).</summary>
    private double Profiled(bool isDecode, Action a)
    {
        var elapsed = 0.0;
        WithProfile(_profiledPhase is null || _profiledPhase == (isDecode ? "decode" : "prefill"), () => elapsed = Time(a));
        return elapsed;
    }

    /// <summary>Runs <paramref name="a"/> with this contender's profile collecting its calls when <paramref name="on"/> (and profiling is on at all).</summary>
    private void WithProfile(bool on, Action a)
    {
        on &= _profile is not null;
        Generated.Profile = on ? _profile : null;
        Generated.ProfileByShape = on ? _profileByShape : null;
        Generated.ProfileByNode = on ? _profileByNode : null;
        try
        {
            a();
        }
        finally
        {
            Generated.Profile = null;
            Generated.ProfileByShape = null;
            Generated.ProfileByNode = null;
        }
    }

    public override Func<long[], double>? PrefillSameWork => _session is null ? null : prompt =>
    {
        _session.Reset();
        Settle();
        return Profiled(false, () => _session.Step(prompt, prompt.Length));
    };

    public override Func<long[], double>? PrefillLastPosition => _session is null ? null : prompt =>
    {
        _session.Reset();
        Settle();
        return Profiled(false, () => _session.Prefill(prompt));
    };

    /// <summary>A planned step computes only the last position's logits for a prompt; an unplanned one runs the whole graph.</summary>
    public override int LastPositionLogitRows(int promptLength) => _runner.Model is IPlannedDecoder ? 1 : promptLength;

    public override Func<long[], double>? Decode => _session is null ? null : prompt =>
    {
        _session.Reset();
        var next = GreedySampler.Instance.Sample(_session.Prefill(prompt.AsSpan(0, 16)), Random.Shared);
        Settle();
        return Bench.DecodeTokens / (Profiled(true, () =>
        {
            for (var i = 0; i < Bench.DecodeTokens; i++) next = GreedySampler.Instance.Sample(_session.Decode(next), Random.Shared);
        }) / 1000);
    };

    /// <summary>
    /// Outputs go back to the model's pool once read, as an app's loop does with Recycle (ONNX Runtime's outputs come
    /// from its arena): fresh output buffers every call would time the OS's page faults. An output that is an input's
    /// own buffer (an Identity or Reshape of an input) is left alone.
    /// </summary>
    public override Action? Run => _inputs is null ? null : () => WithProfile(true, () =>
    {
        foreach (var output in _runner.Run(_inputs).Values)
            if (output is not Tensor t || !_inputStorage.Contains(t.Storage)) _runner.Model.Recycle(output);
    });

    /// <summary>Managed bytes allocated per decode step, all threads (the goal is none once warm).</summary>
    public long AllocatedPerDecodeStep(long[] prompt)
    {
        if (_session is null) return 0;
        _session.Reset();
        var token = GreedySampler.Instance.Sample(_session.Prefill(prompt.AsSpan(0, 16)), Random.Shared);
        var before = GC.GetTotalAllocatedBytes(precise: true);
        for (var i = 0; i < Bench.DecodeTokens; i++) token = GreedySampler.Instance.Sample(_session.Decode(token), Random.Shared);
        return (GC.GetTotalAllocatedBytes(precise: true) - before) / Bench.DecodeTokens;
    }

    public override void Dispose()
    {
        _session?.Dispose();
        _runner.Dispose();
    }
}

/// <summary>The settings every ONNX Runtime session of <c>kiln bench</c> uses, reported with its figures.</summary>
public sealed record OrtSettings(string Version, string GraphOptimization, int Threads, bool Spinning);

/// <summary>
/// ONNX Runtime on the original model, in the same process: explicit session options (see <see cref="OrtSettings"/>),
/// reused input OrtValues, each decode step's presents fed back as the next past without copies.
/// </summary>
internal sealed class OrtContender : Contender
{
    private readonly InferenceSession _session;
    private readonly SessionOptions _options;
    private readonly OrtDecoder? _decoder;
    private readonly List<OrtValue> _values = [];
    private readonly List<string>? _names;
    private readonly RunOptions _run = new();

    public OrtContender(string modelPath, Graph graph, DecoderLayout? layout, IReadOnlyDictionary<string, object?>? inputs, int threads) : base(Role.Ort)
    {
        Options = new OrtSettings(OrtEnv.Instance().GetVersionString(), "all", threads, Spinning: true);
        _options = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        // Idle intra-op threads spin before they sleep (ONNX Runtime's default, stated so the report can say it).
        _options.AddSessionConfigEntry("session.intra_op.allow_spinning", "1");
        try
        {
            _session = new InferenceSession(modelPath, _options);
        }
        catch (OnnxRuntimeException e)
        {
            _options.Dispose();
            throw new KilnException(new Diagnostic(DiagnosticCode.InputMismatch, $"ONNX Runtime refuses the model, so --ort cannot compare with it: {e.Message}", modelPath));
        }
        if (layout is not null) _decoder = new OrtDecoder(_session, graph, layout);
        else if (inputs is not null)
        {
            _names = [];
            foreach (var (name, value) in inputs)
            {
                _names.Add(name);
                _values.Add(ToOrt((Tensor)value!));
            }
        }
    }

    public OrtSettings Options { get; }

    public override Func<long[], double>? PrefillSameWork => _decoder is null ? null : prompt =>
    {
        _decoder.Reset();
        Settle();
        return Time(() => _decoder.Step(prompt));
    };

    public override Func<long[], double>? Decode => _decoder is null ? null : prompt =>
    {
        _decoder.Reset();
        var next = _decoder.Step(prompt.AsSpan(0, 16).ToArray());
        var one = new long[1];
        Settle();
        return Bench.DecodeTokens / (Time(() =>
        {
            for (var i = 0; i < Bench.DecodeTokens; i++) { one[0] = next; next = _decoder.Step(one); }
        }) / 1000);
    };

    public override Action? Run => _names is null ? null : () => { using var r = _session.Run(_run, _names, _values, _session.OutputNames); };

    public override void Dispose()
    {
        _decoder?.Dispose();
        foreach (var v in _values) v.Dispose();
        _run.Dispose();
        _session.Dispose();
        _options.Dispose();
    }

    private static OrtValue ToOrt(Tensor t)
    {
        var shape = t.Shape.Select(d => (long)d).ToArray();
        return t.Type switch
        {
            DType.F32 => OrtValue.CreateTensorValueFromMemory(t.Span<float>().ToArray(), shape),
            DType.I64 => OrtValue.CreateTensorValueFromMemory(t.Span<long>().ToArray(), shape),
            DType.I32 => OrtValue.CreateTensorValueFromMemory(t.Span<int>().ToArray(), shape),
            DType.F64 => OrtValue.CreateTensorValueFromMemory(t.Span<double>().ToArray(), shape),
            DType.U8 => OrtValue.CreateTensorValueFromMemory(t.Span<byte>().ToArray(), shape),
            DType.I8 => OrtValue.CreateTensorValueFromMemory(t.Span<sbyte>().ToArray(), shape),
            DType.Bool => OrtValue.CreateTensorValueFromMemory(t.Span<byte>().ToArray().Select(b => b != 0).ToArray(), shape),
            _ => throw new KilnException(DiagnosticCode.UnsupportedElementType, $"bench cannot hand a {t.Type.Name()} input to ONNX Runtime"),
        };
    }

    /// <summary>ONNX Runtime driving a decoder: reused input OrtValues, each step's presents fed back as the next past without copies.</summary>
    private sealed class OrtDecoder : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly DecoderLayout _layout;
        private readonly Graph _graph;
        private readonly List<string> _inputNames;
        private readonly OrtValue?[] _inputs;
        private readonly RunOptions _run = new();
        private IDisposableReadOnlyCollection<OrtValue>? _last;
        private readonly List<OrtValue> _empties = [];
        private readonly Dictionary<int, (long[] Buffer, OrtValue Value)> _ids = [];

        public OrtDecoder(InferenceSession session, Graph graph, DecoderLayout layout)
        {
            _session = session;
            _layout = layout;
            _graph = graph;
            _inputNames = graph.Inputs.Select(v => v.Name).ToList();
            _inputs = new OrtValue?[_inputNames.Count];
            if (layout.AttentionMask >= 0 || layout.PositionIds >= 0)
                throw new KilnException(DiagnosticCode.UnsupportedOp, "bench --ort drives decoders without attention_mask/position_ids inputs");
            Reset();
        }

        public void Reset()
        {
            _last?.Dispose();
            _last = null;
            foreach (var e in _empties) e.Dispose();
            _empties.Clear();
            // The heads of ONNX Runtime's own model (a compiled model with pruned heads has fewer).
            foreach (var k in _layout.PastKeys.Concat(_layout.PastValues))
            {
                var shape = _graph.Inputs[k].TensorType!.Shape!;
                var empty = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, shape[1].Value!.Value, 0, shape[3].Value!.Value]);
                _empties.Add(empty);
                _inputs[k] = empty;
            }
        }

        /// <summary>Runs the tokens (batch 1), every position's logits; returns the greedy next token.</summary>
        public long Step(long[] tokens)
        {
            if (!_ids.TryGetValue(tokens.Length, out var ids))
                _ids[tokens.Length] = ids = (new long[tokens.Length], OrtValue.CreateTensorValueFromMemory(new long[tokens.Length], [1, tokens.Length]));
            tokens.CopyTo(ids.Value.GetTensorMutableDataAsSpan<long>());
            _inputs[_layout.InputIds] = ids.Value;
            var outs = _session.Run(_run, _inputNames, _inputs!, _session.OutputNames);
            var logits = outs[_layout.Logits].GetTensorDataAsSpan<float>();
            var vocab = (int)outs[_layout.Logits].GetTensorTypeAndShape().Shape[^1];
            var next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits[^vocab..]);
            for (var i = 0; i < _layout.PastKeys.Length; i++)
            {
                _inputs[_layout.PastKeys[i]] = outs[_layout.PresentKeys[i]];
                _inputs[_layout.PastValues[i]] = outs[_layout.PresentValues[i]];
            }
            _last?.Dispose(); // the previous step's outputs were this step's inputs; no longer needed
            _last = outs;
            return next;
        }

        public void Dispose()
        {
            _last?.Dispose();
            foreach (var e in _empties) e.Dispose();
            foreach (var (_, v) in _ids.Values) v.Dispose();
            _run.Dispose();
        }
    }
}
