namespace Kiln.Runtime.Decoding;

/// <summary>
/// A decoder's keys and values, per layer [batch, kvHeads, capacity, headDim], allocated once for the whole
/// context: each step writes its new positions in place after <see cref="Length"/>, and attention reads the
/// first Length + seq positions of each head, so nothing is copied or allocated per token.
/// </summary>
public sealed class KvCache
{
    private readonly float[][] _keys;
    private readonly float[][] _values;

    public KvCache(int layers, int batch, int kvHeads, int headDim, int capacity)
    {
        Layers = layers; Batch = batch; KvHeads = kvHeads; HeadDim = headDim; Capacity = capacity;
        var per = checked((long)batch * kvHeads * capacity * headDim);
        if (per > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(capacity), $"a KV cache of {capacity} positions × {batch} rows × {kvHeads} heads × {headDim} needs more than one array per layer can hold");
        _keys = new float[layers][];
        _values = new float[layers][];
        for (var i = 0; i < layers; i++)
        {
            _keys[i] = GC.AllocateUninitializedArray<float>((int)per);
            _values[i] = GC.AllocateUninitializedArray<float>((int)per);
        }
    }

    public int Layers { get; }
    public int Batch { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int Capacity { get; }

    /// <summary>Positions filled (per row).</summary>
    public int Length { get; set; }

    public Span<float> Keys(int layer) => _keys[layer];

    public Span<float> Values(int layer) => _values[layer];

    /// <summary>Bytes the cache holds.</summary>
    public long Bytes => 2L * Layers * Batch * KvHeads * Capacity * HeadDim * sizeof(float);
}

/// <summary>
/// A compiled decoder whose step was planned (activations in one arena, KV cache written in place): what
/// <see cref="DecoderSession"/> drives when the model offers it, allocating nothing per token.
/// </summary>
public interface IPlannedDecoder
{
    /// <summary>Entries of one logits row.</summary>
    int VocabularySize { get; }

    /// <summary>
    /// Runs <paramref name="seq"/> tokens per row ([batch, seq], row-major) at positions cache.Length onward,
    /// writes their keys and values into <paramref name="cache"/> (the caller advances its Length) and the logits
    /// [batch, seq, vocab] into <paramref name="logits"/> — or, with <paramref name="lastPositionOnly"/>, only each
    /// row's last position [batch, vocab] (a prompt's other logits are never read, and the classifier is the
    /// largest product of a small model's step).
    /// </summary>
    void Step(ReadOnlySpan<long> tokens, int batch, int seq, KvCache cache, Span<float> logits, bool lastPositionOnly = false);
}
