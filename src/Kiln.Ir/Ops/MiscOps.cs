using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>Random generators, EyeLike, NonMaxSuppression, string ops, signal ops (DFT, STFT, windows), losses.</summary>
internal static class MiscOps
{
    public static void Register(OpRegistry r)
    {
        r.Add("EyeLike", "input", "output", "dtype:int?, k:int=0", c =>
            c.Set(0, c.OptInt("dtype") is { } d ? OnnxElementCodes.FromCode((int)d) ?? throw c.Fail($"unsupported dtype {d}") : c.Elem(0), c.ShapeOf(0)), since: 9);
        r.Add("RandomUniform", "", "output", "dtype:int=1, high:float=1.0, low:float=0.0, seed:float?, shape:ints!", c => RandomRule(c, fromInput: false));
        r.Add("RandomNormal", "", "output", "dtype:int=1, mean:float=0.0, scale:float=1.0, seed:float?, shape:ints!", c => RandomRule(c, fromInput: false));
        r.Add("RandomUniformLike", "input", "output", "dtype:int?, high:float=1.0, low:float=0.0, seed:float?", c => RandomRule(c, fromInput: true));
        r.Add("RandomNormalLike", "input", "output", "dtype:int?, mean:float=0.0, scale:float=1.0, seed:float?", c => RandomRule(c, fromInput: true));
        r.Add("Bernoulli", "input", "output", "dtype:int?, seed:float?", c => RandomRule(c, fromInput: true), since: 15);
        r.Add("Multinomial", "input", "output", "dtype:int=6, sample_size:int=1, seed:float?", c =>
        {
            var s = c.RankedShape(0);
            c.Set(0, OnnxElementCodes.FromCode((int)c.Int("dtype")) ?? DType.I32, [s[0], Dim.Const(c.Int("sample_size"))]);
        }, since: 7);
        r.Add("NonMaxSuppression", "boxes, scores, max_output_boxes_per_class?, iou_threshold?, score_threshold?", "selected_indices",
            "center_point_box:int=0", c => c.Set(0, DType.I64, [Dim.Unknown, Dim.Const(3)]), since: 10);
        r.Add("StringNormalizer", "X", "Y", "case_change_action:string=NONE, is_case_sensitive:int=0, locale:string?, stopwords:strings?", c =>
        {
            var s = c.ShapeOf(0);
            c.Set(0, DType.String, s is { Rank: 2 } ? [s[0], Dim.Unknown] : [Dim.Unknown]);
        }, since: 10);
        r.Add("TfIdfVectorizer", "X", "Y",
            "max_gram_length:int!, max_skip_count:int!, min_gram_length:int!, mode:string!, ngram_counts:ints!, ngram_indexes:ints!, pool_int64s:ints?, pool_strings:strings?, weights:floats?", c =>
            {
                var s = c.ShapeOf(0);
                Dim width = (c.Ints("ngram_indexes") is { Length: > 0 } idx) ? idx.Max() + 1 : Dim.Unknown;
                c.Set(0, DType.F32, s is { Rank: 2 } ? [s[0], width] : [width]);
            }, since: 9);
        r.Add("DFT", "input, dft_length?, axis?", "output", "inverse:int=0, onesided:int=0", c =>
        {
            var s = c.ShapeOf(0);
            c.Set(0, c.Elem(0), s is null ? null : new Shape(s.Dims.Select((d, i) => i == s.Rank - 1 ? Dim.Const(2) : Dim.Unknown)));
        }, c =>
        {
            // DFT-17 took axis as an attribute (default 1); from opset 20 it is an input (default -2).
            if (c.Opset < 20) c.SetInput(2, c.Int64Constant([c.Take<IntAttr>("axis")?.Value ?? 1], "axis", scalar: true));
        }, since: 17);
        r.Add("STFT", "signal, frame_step, window?, frame_length?", "output", "onesided:int=1", c =>
        {
            var s = c.ShapeOf(0);
            c.Set(0, c.Elem(0), s is null ? null : new Shape([s[0], Dim.Unknown, Dim.Unknown, Dim.Const(2)]));
        }, since: 17);
        foreach (var op in new[] { "HannWindow", "HammingWindow", "BlackmanWindow" })
            r.Add(op, "size", "output", "output_datatype:int=1, periodic:int=1", c =>
                c.Set(0, OnnxElementCodes.FromCode((int)c.Int("output_datatype")) ?? DType.F32, [c.Known(0)?.Values[0] ?? Dim.Unknown]), since: 17);
        r.Add("MelWeightMatrix", "num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz", "output", "output_datatype:int=1", c =>
        {
            var bins = c.Known(0)?.Values[0] ?? Dim.Unknown;
            var len = c.Known(1)?.Values[0] is { } l ? Dim.FloorDivide(l, 2) + 1 : Dim.Unknown;
            c.Set(0, OnnxElementCodes.FromCode((int)c.Int("output_datatype")) ?? DType.F32, [len, bins]);
        }, since: 17);
        r.Add("NegativeLogLikelihoodLoss", "input, target, weight?", "loss", "ignore_index:int?, reduction:string=mean", c =>
            c.Set(0, c.Elem(0), c.Str("reduction") == "none" ? c.ShapeOf(1) : Shape.Scalar), since: 12);
        r.Add("SoftmaxCrossEntropyLoss", "scores, labels, weights?", "output, log_prob?", "ignore_index:int?, reduction:string=mean", c =>
        {
            c.Set(0, c.Elem(0), c.Str("reduction") == "none" ? c.ShapeOf(1) : Shape.Scalar);
            c.Set(1, c.InputType(0));
        }, since: 12);
    }

    private static void RandomRule(InferenceContext c, bool fromInput)
    {
        var dtype = c.OptInt("dtype");
        var elem = dtype is { } d ? OnnxElementCodes.FromCode((int)d) ?? throw c.Fail($"unsupported dtype {d}") : c.Elem(0);
        c.Set(0, elem, fromInput ? c.ShapeOf(0) : new Shape(c.Ints("shape")!.Select(Dim.Const)));
    }
}
