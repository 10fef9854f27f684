namespace Kiln.Runtime.Decoding;

/// <summary>
/// A decoder's keys and values, per layer [batch, kvHeads, capacity, headDim] (the head count may differ by layer,
/// as after <c>prune-structured{heads=…}</c>), allocated once for the whole
/// context: each step writes its new positions in place after <see cref="Length"/>, and attention reads the
/// first Length + seq positions of each head, so nothing is copied or allocated per token.
/// </summary>
public sealed class KvCache
{
    private readonly float[][] _keys;
    private readonly float[][] _values;
    private readonly sbyte[][] _keyCodes;
    private readonly sbyte[][] _valueCodes;
    private readonly float[][] _keyScales;
    private readonly float[][] _valueScales;
    private readonly int[] _kvHeads;

    /// <summary>A cache whose every layer has <paramref name="kvHeads"/> key/value heads.</summary>
    public KvCache(int layers, int batch, int kvHeads, int headDim, int capacity, int bits = 32)
        : this(batch, Enumerable.Repeat(kvHeads, layers).ToArray(), headDim, capacity, bits)
    {
    }

    /// <param name="kvHeads">the key/value heads of each layer</param>
    /// <param name="bits">32: f32 keys and values; 8: int8 codes with one f32 scale per position and head
    /// (<c>quantize-kv{bits=8}</c>), a quarter of the memory and of the bytes attention reads per token.</param>
    public KvCache(int batch, int[] kvHeads, int headDim, int capacity, int bits = 32)
    {
        if (bits is not (32 or 8)) throw new KernelException($"a KV cache holds f32 (32) or int8 (8) entries, not {bits}-bit");
        var layers = kvHeads.Length;
        Layers = layers; Batch = batch; _kvHeads = (int[])kvHeads.Clone(); HeadDim = headDim; Capacity = capacity; Bits = bits;
        var most = kvHeads.DefaultIfEmpty(0).Max();
        if (checked((long)batch * most * capacity * headDim) > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(capacity), $"a KV cache of {capacity} positions × {batch} rows × {most} heads × {headDim} needs more than one array per layer can hold");
        _keys = new float[bits == 32 ? layers : 0][];
        _values = new float[bits == 32 ? layers : 0][];
        _keyCodes = new sbyte[bits == 8 ? layers : 0][];
        _valueCodes = new sbyte[bits == 8 ? layers : 0][];
        _keyScales = new float[bits == 8 ? layers : 0][];
        _valueScales = new float[bits == 8 ? layers : 0][];
        for (var i = 0; i < layers; i++)
        {
            var per = (int)((long)batch * kvHeads[i] * capacity * headDim);
            var rows = (int)((long)batch * kvHeads[i] * capacity);
            if (bits == 32)
            {
                _keys[i] = GC.AllocateUninitializedArray<float>(per);
                _values[i] = GC.AllocateUninitializedArray<float>(per);
            }
            else
            {
                _keyCodes[i] = GC.AllocateUninitializedArray<sbyte>(per);
                _valueCodes[i] = GC.AllocateUninitializedArray<sbyte>(per);
                _keyScales[i] = GC.AllocateUninitializedArray<float>(rows);
                _valueScales[i] = GC.AllocateUninitializedArray<float>(rows);
            }
        }
    }

    public int Layers { get; }
    public int Batch { get; }
    /// <summary>The key/value heads of each layer.</summary>
    public ReadOnlySpan<int> KvHeads => _kvHeads;

    public int HeadDim { get; }
    public int Capacity { get; }

    /// <summary>32 (f32 entries) or 8 (int8 codes and a scale per position and head).</summary>
    public int Bits { get; }

    /// <summary>Positions filled (per row).</summary>
    public int Length { get; set; }

    public Span<float> Keys(int layer) => Bits == 32 ? _keys[layer] : throw Int8(nameof(Keys));

    public Span<float> Values(int layer) => Bits == 32 ? _values[layer] : throw Int8(nameof(Values));

    /// <summary>int8 keys [batch·kv heads, capacity, head dim]; <see cref="KeyScales"/> holds one scale per position and head.</summary>
    public Span<sbyte> KeyCodes(int layer) => Bits == 8 ? _keyCodes[layer] : throw F32(nameof(KeyCodes));

    public Span<float> KeyScales(int layer) => Bits == 8 ? _keyScales[layer] : throw F32(nameof(KeyScales));

    public Span<sbyte> ValueCodes(int layer) => Bits == 8 ? _valueCodes[layer] : throw F32(nameof(ValueCodes));

    public Span<float> ValueScales(int layer) => Bits == 8 ? _valueScales[layer] : throw F32(nameof(ValueScales));

    /// <summary>Whether the cache has these heads per layer (and so this many layers), this head dim and batch.</summary>
    public bool HasLayout(ReadOnlySpan<int> kvHeads, int headDim, int batch) => kvHeads.SequenceEqual(_kvHeads) && headDim == HeadDim && batch == Batch;

    /// <summary>"L layers × H heads × d for B row(s)" (the heads per layer in brackets where they differ).</summary>
    public override string ToString() =>
        $"{Layers} layers × {(_kvHeads.Distinct().Count() <= 1 ? $"{_kvHeads.FirstOrDefault()}" : $"[{string.Join(", ", _kvHeads)}]")} heads × {HeadDim} for {Batch} row(s)";

    /// <summary>Bytes the cache holds.</summary>
    public long Bytes => BytesFor(Batch, _kvHeads, HeadDim, Capacity, Bits);

    /// <summary>Bytes a cache of these dimensions holds (keys and values; int8 entries carry a scale per position and head).</summary>
    public static long BytesFor(int layers, int batch, int kvHeads, int headDim, int capacity, int bits) =>
        2L * layers * batch * kvHeads * capacity * (bits == 32 ? headDim * sizeof(float) : headDim + sizeof(float));

    /// <summary>Bytes a cache with these heads per layer holds.</summary>
    public static long BytesFor(int batch, ReadOnlySpan<int> kvHeads, int headDim, int capacity, int bits)
    {
        long total = 0;
        foreach (var h in kvHeads) total += BytesFor(1, batch, h, headDim, capacity, bits);
        return total;
    }

    private static KernelException Int8(string what) => new($"this KV cache holds int8 entries: {what} is only for an f32 cache");

    private static KernelException F32(string what) => new($"this KV cache holds f32 entries: {what} is only for an int8 cache");
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

    /// <summary>The cache entries this step reads and writes: 32 (f32) or 8 (int8, after <c>quantize-kv{bits=8}</c>).</summary>
    int KvCacheBits => 32;
}
