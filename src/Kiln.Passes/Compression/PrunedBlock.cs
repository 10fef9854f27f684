using Kiln.Ir;

namespace Kiln.Passes;

/// <summary>
/// One block <c>prune-structured</c> shrinks, seen as units (feed-forward channels, or attention head groups) and
/// the input channels of its output product each unit owns: the statistics gathered there, the units' importance,
/// which units go, and the rewrite.
/// </summary>
internal sealed class PrunedBlock
{
    private readonly FeedForwardBlock? _ffn;
    private readonly AttentionBlock? _attention;
    private double[] _scores = [];

    private PrunedBlock(FeedForwardBlock? ffn, AttentionBlock? attention, double fraction)
    {
        _ffn = ffn;
        _attention = attention;
        Fraction = fraction;
        Out = ffn?.Out ?? attention!.Out;
        // Named before the rewrite renames the weights.
        Name = ffn?.Name ?? attention!.Name;
        Units = ffn?.Channels ?? attention!.KvHeads;
        Statistics = new ChannelStatistics(Out.Inputs, attention?.HeadDim ?? 1);
        FitStatistics = new ChannelStatistics(Out.Inputs);
        ParametersBefore = Products.Sum(p => (long)p.Inputs * p.Outputs);
    }

    public static PrunedBlock Of(FeedForwardBlock b, double fraction) => new(b, null, fraction);

    public static PrunedBlock Of(AttentionBlock b, double fraction) => new(null, b, fraction);

    public string Kind => _ffn is not null ? "ffn" : "attention";

    public string Name { get; }

    public double Fraction { get; }

    /// <summary>Channels, or head groups.</summary>
    public int Units { get; }

    public WeightProduct Out { get; }

    /// <summary>Over every calibration sample: what ranks the units and gives the final bias.</summary>
    public ChannelStatistics Statistics { get; }

    /// <summary>Over the samples <c>bias=auto</c> does not hold back: the bias it judges on the held-back ones.</summary>
    public ChannelStatistics FitStatistics { get; }

    public List<int> Removed { get; } = [];

    private long ParametersBefore { get; }

    private long? _parametersAfter;

    private double _removedSquares, _totalSquares;

    /// <summary>Σ w² over each unit's weights (its magnitude², and its share of the report's weight error).</summary>
    private double[] _unitSquares = [];

    private IEnumerable<WeightProduct> Products => (_ffn is { } f ? f.Ins.Append(f.Out) : [_attention!.Query.Product, _attention.Key.Product, _attention.Value.Product, _attention.Out]).Distinct();

    /// <summary>The output product's input channels unit <paramref name="u"/> owns.</summary>
    private IEnumerable<int> OutChannels(int u) => _ffn is not null ? [u] : QueryHeads(u).SelectMany(HeadChannels);

    private IEnumerable<int> QueryHeads(int group) => Enumerable.Range(group * _attention!.Group, _attention.Group);

    private IEnumerable<int> HeadChannels(int head) => Enumerable.Range(head * _attention!.HeadDim, _attention.HeadDim);

    /// <summary>(product, whether the unit is its columns rather than its rows, the columns or rows) of every weight slice a unit owns.</summary>
    private IEnumerable<(WeightProduct P, bool Columns, IEnumerable<int> Lines)> Slices(int u)
    {
        if (_ffn is { } f)
        {
            foreach (var p in f.Ins) yield return (p, true, [u]);
            yield return (f.Out, false, [u]);
            yield break;
        }
        var a = _attention!;
        yield return (a.Query.Product, true, QueryHeads(u).SelectMany(HeadChannels).Select(c => a.Query.Offset + c));
        yield return (a.Key.Product, true, HeadChannels(u).Select(c => a.Key.Offset + c));
        yield return (a.Value.Product, true, HeadChannels(u).Select(c => a.Value.Offset + c));
        yield return (a.Out, false, OutChannels(u));
    }

    /// <summary>Importance of every unit by <paramref name="method"/> (magnitude, wanda-sp, flap).</summary>
    public void Score(string method)
    {
        var weights = Products.ToDictionary(p => p, p => p.Weight.Data!.ToArray<float>());
        var w = weights[Out];
        var n = Out.Outputs;
        double RowSum(int c, Func<float, double> f)
        {
            double s = 0;
            for (var o = 0; o < n; o++) s += f(w[c * n + o]);
            return s;
        }
        _scores = new double[Units];
        _unitSquares = Enumerable.Range(0, Units).Select(u => Squares(u, weights)).ToArray();
        _totalSquares = weights.Sum(kv => kv.Value.Sum(v => (double)v * v));
        for (var u = 0; u < Units; u++)
        {
            _scores[u] = method switch
            {
                "magnitude" => Math.Sqrt(_unitSquares[u]),
                "wanda-sp" => OutChannels(u).Sum(c => Statistics.Norm(c) * RowSum(c, v => Math.Abs(v))),
                _ => Fluctuation(u, w),
            };
        }
    }

    /// <summary>
    /// FLAP's fluctuation of a unit: the variance of its contribution X_u·W_u over the calibration tokens, E‖(X_u − X̄_u)·W_u‖².
    /// For a channel that is Var(X_c)·‖W_c‖²; for a head it is Σ_ij Cov(X_i, X_j)·(W_i·W_j) over the head's channels,
    /// which keeps what correlated channels of one head cancel or add (summing per-channel terms would not).
    /// </summary>
    private double Fluctuation(int u, float[] w)
    {
        var n = Out.Outputs;
        if (_ffn is not null)
        {
            double s = 0;
            for (var o = 0; o < n; o++) s += (double)w[u * n + o] * w[u * n + o];
            return Statistics.Variance(u) * s;
        }
        double total = 0;
        foreach (var head in QueryHeads(u))
        {
            var channels = HeadChannels(head).ToArray();
            foreach (var i in channels)
                foreach (var j in channels)
                {
                    double dot = 0;
                    for (var o = 0; o < n; o++) dot += (double)w[i * n + o] * w[j * n + o];
                    total += Statistics.Covariance(i, j) * dot;
                }
        }
        return total;
    }

    private double Squares(int u, Dictionary<WeightProduct, float[]> weights)
    {
        double s = 0;
        foreach (var (p, columns, lines) in Slices(u))
        {
            var w = weights[p];
            foreach (var l in lines)
                if (columns) for (var i = 0; i < p.Inputs; i++) s += (double)w[i * p.Outputs + l] * w[i * p.Outputs + l];
                else for (var o = 0; o < p.Outputs; o++) s += (double)w[l * p.Outputs + o] * w[l * p.Outputs + o];
        }
        return s;
    }

    /// <summary>Each unit's share of the block's total importance: comparable across blocks, whatever their scale.</summary>
    public double[] Shares()
    {
        var total = _scores.Sum();
        return _scores.Select(s => total > 0 ? s / total : 0).ToArray();
    }

    /// <summary>The share of the block's importance that its unit ranked <paramref name="rank"/> (0: least important) carries.</summary>
    public double ShareOfLowest(int rank) => Shares().Order().ElementAt(rank);

    public void RemoveLowest(int count) => Remove(Enumerable.Range(0, Units).OrderBy(u => _scores[u]).ThenBy(u => u).Take(count));

    public void Remove(IEnumerable<int> units)
    {
        Removed.AddRange(units);
        Removed.Sort();
        _removedSquares = Removed.Sum(u => _unitSquares[u]);
    }

    /// <summary>Σ over the removed channels c of mean(X_c) · W_c: what they added on average, as a bias of the output product.</summary>
    public float[] CompensatingBias(ChannelStatistics statistics)
    {
        var w = Out.Weight.Data!.ToArray<float>();
        var n = Out.Outputs;
        var bias = new double[n];
        foreach (var c in Removed.SelectMany(OutChannels))
        {
            var mean = statistics.Mean(c);
            for (var o = 0; o < n; o++) bias[o] += mean * w[c * n + o];
        }
        return bias.Select(b => (float)b).ToArray();
    }

    /// <summary>Cuts the removed units out of every weight and shape of the block.</summary>
    public void Rewrite(PassContext ctx)
    {
        var keep = Enumerable.Range(0, Units).Except(Removed).ToArray();
        if (_ffn is { } f)
        {
            foreach (var p in f.Ins) StructuredRewrite.KeepColumns(ctx, p, keep);
            StructuredRewrite.KeepRows(ctx, f.Out, keep);
            _parametersAfter = Products.Sum(p => (long)p.Inputs * p.Outputs);
            return;
        }
        var a = _attention!;
        var heads = keep.SelectMany(QueryHeads).ToArray();
        var parts = new[] { (a.Query, heads.SelectMany(HeadChannels)), (a.Key, keep.SelectMany(HeadChannels)), (a.Value, keep.SelectMany(HeadChannels)) };
        // One product may hold all three parts (a Split of it): its kept columns are the parts' together, and the Split takes their new widths.
        foreach (var product in parts.GroupBy(x => x.Item1.Product))
            StructuredRewrite.KeepColumns(ctx, product.Key, product.SelectMany(x => x.Item2.Select(c => x.Item1.Offset + c)).Order().ToArray());
        if (a.Query.Split is { } split)
            StructuredRewrite.SplitSizes(ctx, split, parts.OrderBy(x => x.Item1.Offset).Select(x => (long)x.Item2.Count()).ToArray());
        StructuredRewrite.KeepRows(ctx, a.Out, heads.SelectMany(HeadChannels).ToArray());
        StructuredRewrite.SplitHeadsAnyCount(ctx, a.Splits, a.Merge, a.HeadDim);
        StructuredRewrite.ResizePasts(ctx.Graph, a.Pasts, keep.Length);
        _parametersAfter = Products.Sum(p => (long)p.Inputs * p.Outputs);
    }

    /// <summary>The block's row in the compile report's layer table.</summary>
    public LayerReport Report(bool compensated)
    {
        var kept = Units - Removed.Count;
        var after = _parametersAfter ?? ParametersBefore;
        var what = _ffn is not null ? $"{kept}/{Units} channels"
            : $"{kept}/{Units} head groups ({kept * _attention!.Group}/{_attention.QueryHeads} query heads, {kept}/{_attention.KvHeads} key/value heads)";
        return new LayerReport($"{Name} ({Kind})", what, 32, 4 * after, 4 * ParametersBefore, _totalSquares == 0 ? 0 : Math.Sqrt(_removedSquares / _totalSquares), null,
            FormattableString.Invariant($"parameters {ParametersBefore:N0} → {after:N0}, product FLOPs per token {2 * ParametersBefore:N0} → {2 * after:N0}")
            + (_attention is not null && Removed.Count > 0 ? $"; removed group{(Removed.Count > 1 ? "s" : "")} {string.Join(", ", Removed)}" : "")
            + (Removed.Count > 0 && compensated ? "; bias compensated" : ""));
    }
}

/// <summary>
/// Per input channel of a product, over the calibration tokens: the sum and the sum of squares (double); with
/// <c>span</c> > 1 also the products of channels within each span of that many (a head's channels), for the
/// covariance of a head's input.
/// </summary>
internal sealed class ChannelStatistics(int channels, int span = 1)
{
    private readonly double[] _sum = new double[channels];
    private readonly double[] _squares = new double[channels];
    private readonly double[] _cross = span > 1 ? new double[(long)channels * span] : [];
    private long _tokens;

    /// <summary>Adds tokens [<paramref name="from"/>, <paramref name="to"/>) of the layer's inputs (all of them by default).</summary>
    public void Add(CalibrationWalk.LayerInputs x, int from = 0, int to = -1)
    {
        if (to < 0) to = x.Tokens;
        for (var t = from; t < to; t++)
        {
            var row = x.X.AsSpan((int)((long)t * x.Columns), x.Columns);
            for (var j = 0; j < x.Columns; j++)
            {
                double v = row[j];
                _sum[j] += v;
                _squares[j] += v * v;
            }
            if (span > 1)
                for (var j = 0; j < x.Columns; j++)
                {
                    var first = j - j % span;
                    for (var i = 0; i < span; i++) _cross[(long)j * span + i] += (double)row[j] * row[first + i];
                }
        }
        _tokens += to - from;
    }

    public double Mean(int c) => _tokens == 0 ? 0 : _sum[c] / _tokens;

    /// <summary>The sample variance.</summary>
    public double Variance(int c) => _tokens < 2 ? 0 : Math.Max(0, (_squares[c] - _sum[c] * _sum[c] / _tokens) / (_tokens - 1));

    /// <summary>The sample covariance of channels <paramref name="c"/> and <paramref name="d"/> of one span.</summary>
    public double Covariance(int c, int d) => _tokens < 2 ? 0 : (_cross[(long)c * span + d % span] - _sum[c] * _sum[d] / _tokens) / (_tokens - 1);

    /// <summary>‖X_c‖₂.</summary>
    public double Norm(int c) => Math.Sqrt(_squares[c]);
}
