namespace Kiln.Runtime.Decoding;

/// <summary>Picks the next token from one position's logits. Randomness comes only from the session's seeded generator, so a seed fixes the text.</summary>
public interface ISampler
{
    long Sample(ReadOnlySpan<float> logits, Random random);
}

/// <summary>The most likely token (ties: the lowest id).</summary>
public sealed class GreedySampler : ISampler
{
    public static readonly GreedySampler Instance = new();

    public long Sample(ReadOnlySpan<float> logits, Random random) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
}

/// <summary>Softmax sampling at a temperature, restricted to the <c>topK</c> most likely tokens and then to the smallest set whose probability reaches <c>topP</c>.</summary>
public sealed class TemperatureSampler : ISampler
{
    public TemperatureSampler(float temperature = 1f, int topK = 0, float topP = 1f)
    {
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), "temperature must be positive (use GreedySampler for 0)");
        if (topK < 0) throw new ArgumentOutOfRangeException(nameof(topK), "topK must be 0 (all) or positive");
        if (!(topP > 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(topP), "topP must be in (0, 1]");
        Temperature = temperature;
        TopK = topK;
        TopP = topP;
    }

    public float Temperature { get; }

    public int TopK { get; }

    public float TopP { get; }

    private int[] _order = [];
    private float[] _p = [];

    public long Sample(ReadOnlySpan<float> logits, Random random)
    {
        var n = logits.Length;
        if (_order.Length != n) { _order = new int[n]; _p = new float[n]; }
        for (var i = 0; i < n; i++) _order[i] = i;
        var l = logits.ToArray();
        // Most likely first; ids break ties so the order (and so the text) is deterministic.
        Array.Sort(_order, (a, b) => l[b].CompareTo(l[a]) is var c && c != 0 ? c : a.CompareTo(b));
        var keep = TopK > 0 ? Math.Min(TopK, n) : n;
        var max = l[_order[0]];
        double sum = 0;
        for (var i = 0; i < keep; i++) sum += _p[i] = MathF.Exp((l[_order[i]] - max) / Temperature);
        double mass = 0;
        var cut = keep;
        for (var i = 0; i < keep; i++)
        {
            mass += _p[i] / sum;
            if (mass >= TopP) { cut = i + 1; break; }
        }
        double total = 0;
        for (var i = 0; i < cut; i++) total += _p[i];
        var r = random.NextDouble() * total;
        for (var i = 0; i < cut; i++)
        {
            r -= _p[i];
            if (r <= 0) return _order[i];
        }
        return _order[cut - 1];
    }
}
