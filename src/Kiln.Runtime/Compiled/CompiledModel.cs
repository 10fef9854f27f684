using Kiln.Runtime.Operators;

namespace Kiln.Runtime.Compiled;

/// <summary>
/// What every generated model class offers besides its typed <c>Run</c>: its inputs and outputs by name and an
/// untyped run over values in input order, for tools (<c>kiln run --engine compiled</c>) that load models they
/// did not compile against.
/// </summary>
public interface ICompiledModel : IDisposable
{
    IReadOnlyList<string> InputNames { get; }

    IReadOnlyList<string> OutputNames { get; }

    /// <summary>The KV-cache layout when the model is a decoder with the past/present convention (then <c>new DecoderSession(model, layout)</c> drives it), else null.</summary>
    Decoding.DecoderLayout? DecoderLayout { get; }

    /// <summary>
    /// Hands the buffers of a value this model returned back to its pool, for the next run to reuse. The caller
    /// promises nothing reads the value any more (a decoder session recycles the past it just replaced).
    /// </summary>
    void Recycle(object? value);

    /// <summary>
    /// Bytes one call may hold in tensors (activations, the arena); a call that needs more is refused before
    /// allocating (KILN0022). Default: <see cref="MemoryBudget.DefaultLimit"/>. Decoder sessions check their KV cache
    /// against it too.
    /// </summary>
    long MemoryBudgetBytes { get; set; }

    /// <summary>
    /// Threads this model's kernels may use, for its calls only (two models on two threads keep their own); a
    /// session's <c>Threads</c> or a caller's <see cref="Kernels.Parallelism.Use"/> around the call wins. 0: every core.
    /// </summary>
    int Threads { get; set; }

    /// <summary>Runs on values in <see cref="InputNames"/> order (null: an absent optional input, or the input's default); returns outputs in <see cref="OutputNames"/> order.</summary>
    object?[] RunValues(IReadOnlyList<object?> inputs);
}

/// <summary>A compiled model failed on the values it was given; names the node that failed (KILN0023) or the input (KILN0021).</summary>
public sealed class ModelRunException(string code, string model, string? node, string? op, string message)
    : Exception($"{code}: {model}: {(node is null ? "" : $"node '{node}' ({op}): ")}{message}")
{
    public string Code { get; } = code;

    public string? Node { get; } = node;

    public string? Op { get; } = op;
}

/// <summary>
/// Kiln's own code failed while running a model: a bug in Kiln, never the caller's input (KILN0099). Names the model
/// and node; the cause, with its stack, is the inner exception. Bad input is what a check rejects on purpose
/// (<see cref="KernelException"/>, input validation): <see cref="ModelRunException"/>.
/// </summary>
public sealed class KilnInternalException(string model, string? node, string? op, Exception cause)
    : Exception($"KILN0099: {model}: {(node is null ? "" : $"node '{node}' ({op}): ")}this is a bug in Kiln: {cause.GetType().Name}: {cause.Message}", cause)
{
    public string? Node { get; } = node;

    public string? Op { get; } = op;
}

/// <summary>Helpers generated code calls: operator invocation with baked attributes, input checks.</summary>
public static class Generated
{
    [ThreadStatic] private static Dictionary<Action<OpContext>, (int Calls, double Milliseconds)>? _profile;
    [ThreadStatic] private static Dictionary<string, (int Calls, double Milliseconds)>? _profileByShape;

    /// <summary>
    /// When set, <see cref="Call"/> adds each call's time to its operator's entry (for <c>KILN_PROFILE=1 kiln bench</c>).
    /// Per thread: it profiles the calls made from the thread that set it, never another model's.
    /// </summary>
    public static Dictionary<Action<OpContext>, (int Calls, double Milliseconds)>? Profile
    {
        get => _profile;
        set => _profile = value;
    }

    /// <summary>
    /// With <see cref="Profile"/>: time per operator and input shapes (<c>Conv [1,96,64,80] [24,96,3,3]</c>), which
    /// tells which node of an op kind is slow. Per thread, as <see cref="Profile"/>.
    /// </summary>
    public static Dictionary<string, (int Calls, double Milliseconds)>? ProfileByShape
    {
        get => _profileByShape;
        set => _profileByShape = value;
    }

    [ThreadStatic] private static Dictionary<NodeKey, (int Calls, double Milliseconds)>? _profileByNode;

    /// <summary>A node of a compiled model: its name, op and input types (symbolic dims by name, as the IR has them).</summary>
    public readonly record struct NodeKey(string Node, string Op, string Inputs);

    /// <summary>
    /// When set, planned code (decoders' steps, which call kernels directly rather than through <see cref="Call"/>)
    /// adds each node's time to its entry (for <c>KILN_PROFILE=1 kiln bench</c>). Per thread, as <see cref="Profile"/>.
    /// </summary>
    public static Dictionary<NodeKey, (int Calls, double Milliseconds)>? ProfileByNode
    {
        get => _profileByNode;
        set => _profileByNode = value;
    }

    /// <summary>Planned code, before its first node: a start time when <see cref="ProfileByNode"/> is set, else 0 (profiling off costs one test per node).</summary>
    public static long NodeProfileStart() => _profileByNode is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>Planned code, after a node: adds the time since <paramref name="started"/> to the node's entry; returns the next node's start.</summary>
    public static long NodeProfileEnd(long started, string node, string op, string inputs)
    {
        var now = System.Diagnostics.Stopwatch.GetTimestamp();
        if (_profileByNode is not { } profile) return 0;
        var key = new NodeKey(node, op, inputs);
        var (calls, ms) = profile.GetValueOrDefault(key);
        profile[key] = (calls + 1, ms + (now - started) * 1000.0 / System.Diagnostics.Stopwatch.Frequency);
        return System.Diagnostics.Stopwatch.GetTimestamp();
    }

    [ThreadStatic] private static long _deadline;
    [ThreadStatic] private static double _limitSeconds;

    /// <summary>
    /// Limits the wall-clock time of the calls this thread makes until the scope is disposed (null: no limit): an
    /// operator call that starts after the deadline fails with KILN0023, as the interpreter's <c>TimeLimit</c> does
    /// (checked between operator calls, so inside loops too). For test runners (<c>kiln conformance</c>) that must not
    /// hang on one case.
    /// </summary>
    public static TimeLimitScope TimeLimit(TimeSpan? limit)
    {
        var scope = new TimeLimitScope(_deadline, _limitSeconds);
        _deadline = limit is { } l ? System.Diagnostics.Stopwatch.GetTimestamp() + (long)(l.TotalSeconds * System.Diagnostics.Stopwatch.Frequency) : 0;
        _limitSeconds = limit?.TotalSeconds ?? 0;
        return scope;
    }

    /// <summary>Restores the time limit that was in force before <see cref="TimeLimit"/>.</summary>
    public readonly struct TimeLimitScope : IDisposable
    {
        private readonly long _savedDeadline;
        private readonly double _savedSeconds;

        internal TimeLimitScope(long deadline, double seconds)
        {
            _savedDeadline = deadline;
            _savedSeconds = seconds;
        }

        public void Dispose()
        {
            _deadline = _savedDeadline;
            _limitSeconds = _savedSeconds;
        }
    }

    /// <summary>Runs an operator entry on its inputs; returns its outputs.</summary>
    public static object?[] Call(Action<OpContext> op, OpAttributes attributes, bool[] wanted, params object?[] inputs)
    {
        if (_deadline != 0 && System.Diagnostics.Stopwatch.GetTimestamp() > _deadline)
            throw new KernelException($"the run exceeded its time limit of {_limitSeconds.ToString("0.#", System.Globalization.CultureInfo.InvariantCulture)} s");
        var ctx = new OpContext(attributes, inputs, wanted.Length, wanted);
        if (Profile is not { } profile)
        {
            op(ctx);
            return ctx.Outputs;
        }
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        op(ctx);
        var (calls, ms) = profile.GetValueOrDefault(op);
        profile[op] = (calls + 1, ms + System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        if (ProfileByShape is { } byShape)
        {
            var key = Operators.OperatorTable.NameOf(op) + " " + string.Join(" ", inputs.Select(i => i is Tensor t ? "[" + string.Join(",", t.Shape) + "]" : "-"));
            var (shapeCalls, shapeMs) = byShape.GetValueOrDefault(key);
            byShape[key] = (shapeCalls + 1, shapeMs + System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
        return ctx.Outputs;
    }

    /// <summary>
    /// Checks a tensor input against its declared element type and dims: a fixed size, or a symbol (symbols shared by
    /// several inputs must agree; the first binding is kept in <paramref name="symbols"/>), or free (-1 with no symbol).
    /// <paramref name="dims"/> null: the rank is not checked.
    /// </summary>
    public static Tensor Input(string model, string name, object? value, DType type, int[]? dims, string?[]? symbols, long[] bound, string[] boundNames)
    {
        ModelRunException Bad(string what) => new("KILN0021", model, null, null, $"input '{name}': {what}");
        if (value is not Tensor t) throw Bad(value is null ? "is missing" : $"expected a tensor, got a {Values.Describe(value)}");
        if (t.Type != type) throw Bad($"expected element type {type.Name()}, got {t.Type.Name()}");
        if (dims is null) return t;
        string Want() => "[" + string.Join(", ", dims.Select((d, i) => symbols?[i] ?? (d < 0 ? "?" : d.ToString(System.Globalization.CultureInfo.InvariantCulture)))) + "]";
        if (t.Rank != dims.Length) throw Bad($"expected shape {Want()} (rank {dims.Length}), got [{string.Join(", ", t.Shape)}] (rank {t.Rank})");
        for (var d = 0; d < dims.Length; d++)
        {
            if (dims[d] >= 0 && dims[d] != t.Shape[d]) throw Bad($"expected shape {Want()}, got [{string.Join(", ", t.Shape)}] (dim {d} must be {dims[d]})");
            if (symbols?[d] is not { } s) continue;
            var k = Array.IndexOf(boundNames, s);
            if (bound[k] >= 0 && bound[k] != t.Shape[d]) throw Bad($"dim {d} is '{s}' = {t.Shape[d]}, but another input already set '{s}' = {bound[k]}");
            bound[k] = t.Shape[d];
        }
        return t;
    }

    /// <summary>
    /// Returns the buffers of values that just died to the pool, unless a live value (a view, an input, an output
    /// computed earlier) still uses the same storage. Each buffer is returned once.
    /// </summary>
    public static void Release(TensorPool pool, object?[] dead, object?[] live)
    {
        var shared = ReleaseScratch ??= new HashSet<object>(ReferenceEqualityComparer.Instance);
        shared.Clear();
        foreach (var v in live) AddStorage(v, shared);
        foreach (var v in dead)
        {
            if (v is not Tensor t || t.Persistent || t.Storage is not byte[] buffer) continue;
            if (shared.Add(buffer)) pool.Return(buffer);
        }
    }

    [ThreadStatic] private static HashSet<object>? ReleaseScratch;

    private static void AddStorage(object? v, HashSet<object> into)
    {
        switch (v)
        {
            case Tensor t: into.Add(t.Storage); break;
            case TensorSequence s: foreach (var t in s.Items) into.Add(t.Storage); break;
            case OptionalValue o: AddStorage(o.Value, into); break;
        }
    }

    /// <summary>A planned value as a new tensor, for the operator entry of a node with no planned kernel to read.</summary>
    public static Tensor Copy<T>(DType type, int[] shape, ReadOnlySpan<T> values) where T : unmanaged
    {
        var t = Tensor.Uninitialized(type, shape);
        values.CopyTo(t.Span<T>());
        return t;
    }

    /// <summary>A small constant baked into the code (a tensor attribute), from its bytes in base64.</summary>
    public static Tensor Constant(DType type, int[] shape, string base64) => Tensor.Wrap(type, shape, Convert.FromBase64String(base64), persistent: true);

    /// <summary>Checks a non-tensor input's kind.</summary>
    public static object Value(string model, string name, object? value, string kind)
    {
        var ok = kind switch { "seq" => value is TensorSequence, "optional" => value is OptionalValue, _ => value is not null };
        return ok && value is not null ? value : throw new ModelRunException("KILN0021", model, null, null,
            $"input '{name}': expected a {(kind == "seq" ? "sequence" : kind)}, got a {Values.Describe(value)}");
    }
}
