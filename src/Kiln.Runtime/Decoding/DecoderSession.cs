using Kiln.Runtime.Compiled;

namespace Kiln.Runtime.Decoding;

/// <summary>
/// Where a decoder model's KV-cache inputs and outputs sit (the <c>past_key_values.N.key/value</c> →
/// <c>present.N.key/value</c> convention), emitted by the compiler next to the model class. -1: no such input.
/// <see cref="KvHeads"/> holds each layer's key/value heads.
/// </summary>
public sealed record DecoderLayout(int InputIds, int AttentionMask, int PositionIds, int[] PastKeys, int[] PastValues,
    int Logits, int[] PresentKeys, int[] PresentValues, int[] KvHeads, int HeadDim);

public sealed record DecoderOptions
{
    /// <summary>Most tokens (prompt and generated) one session holds; going past it is an error, never a silent overrun.</summary>
    public int MaxContext { get; init; } = 2048;

    /// <summary>Rows decoded together (all of one length: the models take no padding mask).</summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>Tokens that end <see cref="DecoderSession.Generate"/> (the stop token is not yielded).</summary>
    public IReadOnlyList<long> StopTokens { get; init; } = [];

    /// <summary>Seed of the sampler's generator: the same seed gives the same text.</summary>
    public int Seed { get; init; }

    /// <summary>Threads this session's kernels may use (its calls only, whatever other sessions or models use); 0: the model's <c>Threads</c>, else every core.</summary>
    public int Threads { get; init; }
}

/// <summary>
/// A conversation with a compiled decoder: owns the KV cache, feeds it back each step, tracks the position.
/// <see cref="Prefill"/> takes a prompt, <see cref="Decode"/> one token, <see cref="Generate"/> streams tokens.
/// One session is used by one thread at a time.
/// </summary>
public sealed class DecoderSession : IDisposable
{
    private readonly ICompiledModel _model;
    private readonly DecoderLayout _layout;
    private readonly object?[] _inputs;
    private readonly Random _random;
    private Tensor? _lastLogits;
    // The planned path (when the model offers one): the cache written in place, logits into one reused buffer.
    private readonly IPlannedDecoder? _planned;
    private readonly KvCache? _cache;
    private float[] _logits = [];

    public DecoderSession(ICompiledModel model, DecoderLayout layout, DecoderOptions? options = null)
    {
        _model = model;
        _layout = layout;
        Options = options ?? new DecoderOptions();
        if (Options.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(options), "BatchSize must be at least 1");
        if (Options.MaxContext < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxContext must be at least 1");
        _inputs = new object?[model.InputNames.Count];
        _random = new Random(Options.Seed);
        if (model is IPlannedDecoder planned)
        {
            _planned = planned;
            var bytes = KvCache.BytesFor(Options.BatchSize, layout.KvHeads, layout.HeadDim, Options.MaxContext, planned.KvCacheBits);
            if (bytes > model.MemoryBudgetBytes)
                throw new ModelRunException("KILN0022", model.GetType().Name, null, null,
                    $"a KV cache of {Options.BatchSize} row(s) × {Options.MaxContext} positions needs {MemoryBudget.Format(bytes)}, more than the model's memory budget of {MemoryBudget.Format(model.MemoryBudgetBytes)} (lower MaxContext, or raise MemoryBudgetBytes)");
            _cache = new KvCache(Options.BatchSize, layout.KvHeads, layout.HeadDim, Options.MaxContext, planned.KvCacheBits);
        }
        Reset();
    }

    public DecoderOptions Options { get; }

    /// <summary>Tokens the cache holds (per row).</summary>
    public int Position { get; private set; }

    /// <summary>Empties the cache and restarts the sampler's generator from the seed.</summary>
    public void Reset()
    {
        Position = 0;
        _lastLogits = null;
        if (_cache is not null)
        {
            _cache.Length = 0;
            return;
        }
        for (var layer = 0; layer < _layout.PastKeys.Length; layer++)
            foreach (var k in new[] { _layout.PastKeys[layer], _layout.PastValues[layer] })
                _inputs[k] = Tensor.Zeros(DType.F32, [Options.BatchSize, _layout.KvHeads[layer], 0, _layout.HeadDim]);
    }

    /// <summary>Runs one step on <paramref name="tokens"/> ([batch, seq] ids, row-major); returns the logits [batch, seq, vocab], valid until the session's next call.</summary>
    public ReadOnlySpan<float> Step(ReadOnlySpan<long> tokens, int seq)
    {
        var batch = Options.BatchSize;
        if (seq < 1 || tokens.Length != batch * seq) throw new ArgumentException($"expected {batch} row(s) of {seq} tokens, got {tokens.Length} tokens");
        CheckRoom(seq);
        if (_planned is not null) return PlannedStep(tokens, batch, seq, lastOnly: false);
        _inputs[_layout.InputIds] = Tensor.FromArray(DType.I64, [batch, seq], tokens.ToArray());
        if (_layout.AttentionMask >= 0)
        {
            var mask = new long[batch * (Position + seq)];
            Array.Fill(mask, 1L);
            _inputs[_layout.AttentionMask] = Tensor.FromArray(DType.I64, [batch, Position + seq], mask);
        }
        if (_layout.PositionIds >= 0)
        {
            var pos = new long[batch * seq];
            for (var i = 0; i < pos.Length; i++) pos[i] = Position + i % seq;
            _inputs[_layout.PositionIds] = Tensor.FromArray(DType.I64, [batch, seq], pos);
        }
        object?[] outs;
        using (Threads())
            outs = _model.RunValues(_inputs);
        // The pasts just consumed and the previous step's logits go back to the model's pool: the next step's
        // presents (one token longer) and logits reuse those buffers instead of allocating.
        for (var i = 0; i < _layout.PastKeys.Length; i++)
        {
            _model.Recycle(_inputs[_layout.PastKeys[i]]);
            _model.Recycle(_inputs[_layout.PastValues[i]]);
            _inputs[_layout.PastKeys[i]] = outs[_layout.PresentKeys[i]];
            _inputs[_layout.PastValues[i]] = outs[_layout.PresentValues[i]];
        }
        _model.Recycle(_lastLogits);
        Position += seq;
        _lastLogits = (Tensor)outs[_layout.Logits]!;
        return _lastLogits.Span<float>();
    }

    private ReadOnlySpan<float> PlannedStep(ReadOnlySpan<long> tokens, int batch, int seq, bool lastOnly)
    {
        var need = checked(batch * (lastOnly ? 1 : seq) * _planned!.VocabularySize);
        if (_logits.Length < need) _logits = GC.AllocateUninitializedArray<float>(need);
        var logits = _logits.AsSpan(0, need);
        using (Threads())
            _planned.Step(tokens, batch, seq, _cache!, logits, lastOnly);
        _cache!.Length += seq;
        Position += seq;
        return logits;
    }

    /// <summary>Feeds a prompt (batch 1); returns the logits of its last position (valid until the session's next call).</summary>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<long> tokens)
    {
        RequireBatch1();
        if (_planned is not null)
        {
            CheckRoom(tokens.Length);
            return PlannedStep(tokens, 1, tokens.Length, lastOnly: true);
        }
        var logits = Step(tokens, tokens.Length);
        return logits[(logits.Length / tokens.Length * (tokens.Length - 1))..];
    }

    /// <summary>Feeds one token (batch 1); returns the next position's logits (valid until the session's next call).</summary>
    public ReadOnlySpan<float> Decode(long token)
    {
        RequireBatch1();
        return Step(System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(ref token, 1), 1);
    }

    /// <summary>Streams up to <paramref name="maxTokens"/> tokens after <paramref name="prompt"/> (batch 1), stopping at a stop token or the context limit.</summary>
    public IEnumerable<long> Generate(IReadOnlyList<long> prompt, int maxTokens, ISampler? sampler = null)
    {
        RequireBatch1();
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: give at least one token (BOS)");
        sampler ??= GreedySampler.Instance;
        var next = sampler.Sample(Prefill(prompt.ToArray()), _random);
        for (var produced = 0; produced < maxTokens; produced++)
        {
            if (Options.StopTokens.Contains(next)) yield break;
            yield return next;
            if (produced + 1 == maxTokens || Position >= Options.MaxContext) yield break;
            next = sampler.Sample(Decode(next), _random);
        }
    }

    /// <summary>The session's thread count for the call (on this thread only; it wins over the model's own), or the model's.</summary>
    private Kernels.Parallelism.Scope Threads() => Options.Threads > 0 ? Kernels.Parallelism.Use(Options.Threads) : Kernels.Parallelism.UseUnlessSet(0);

    private void CheckRoom(int seq)
    {
        if (seq < 1) throw new ArgumentException("a step needs at least one token");
        if (Position + seq > Options.MaxContext)
            throw new ModelRunException("KILN0023", _model.GetType().Name, null, null,
                $"the session holds {Position} tokens; {seq} more would exceed its MaxContext of {Options.MaxContext}");
    }

    private void RequireBatch1()
    {
        if (Options.BatchSize != 1) throw new InvalidOperationException($"this call decodes one row; the session has BatchSize {Options.BatchSize}: use Step");
    }

    public void Dispose() => Array.Clear(_inputs);
}
