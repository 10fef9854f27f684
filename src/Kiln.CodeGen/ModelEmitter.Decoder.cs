using Kiln.CodeGen.Planning;
using Kiln.Ir;

namespace Kiln.CodeGen;

/// <summary>
/// The decoder convention: which inputs and outputs are token ids, past and present keys and values, and logits, and
/// the argument checks a planned decoding step starts with.
/// </summary>
public sealed partial class ModelEmitter
{
    /// <summary>
    /// The KV-cache layout of a decoder whose I/O follows the <c>input_ids</c>, <c>past_key_values.N.key/value</c> →
    /// <c>logits</c>, <c>present.N.key/value</c> convention (as a C# expression), or null for other models.
    /// </summary>
    private static string? DecoderLayoutOf(Graph g)
    {
        if (DecoderConvention.Of(g) is not { } io) return null;
        int In(string name) => g.Inputs.FindIndex(v => v.Name == name);
        var arr = (int[] a) => CSharp.Ints(a);
        return $"new DecoderLayout({io.InputIds}, {In("attention_mask")}, {In("position_ids")}, {arr(io.PastKeys)}, {arr(io.PastValues)}, {io.Logits}, {arr(io.PresentKeys)}, {arr(io.PresentValues)}, {arr(io.KvHeads)}, {io.HeadDim})";
    }

    /// <summary>Argument checks of the step and its symbol locals (from batch, seq and the cache's length), or why the inputs' dims do not allow a step.</summary>
    private string? StepPrologue(DecoderIo io, CodeWriter w)
    {
        var g = _graph;
        if (io.Vocabulary is null) return "the logits' last dim (the vocabulary) is not fixed";
        if (g.Inputs[io.InputIds].TensorType is not { Elem: DType.I64, Shape: { Rank: 2 } }) return "input_ids is not i64 [batch, seq]";
        var sources = new Dictionary<string, string>(StringComparer.Ordinal);
        var checks = new List<string>();
        string? Bind(Value v, string[] exprs)
        {
            var dims = v.TensorType!.Shape!.Dims;
            for (var i = 0; i < dims.Count; i++)
            {
                if (dims[i].Value is { } lit) { checks.Add($"{exprs[i]} != {lit}"); continue; }
                if (dims[i].SymbolName is not { } sym) return $"input '{v.Name}' has a computed dim";
                if (sources.TryGetValue(sym, out var e) && e != exprs[i]) return $"symbol '{sym}' stands for two different step dims";
                sources[sym] = exprs[i];
            }
            return null;
        }
        if (Bind(g.Inputs[io.InputIds], ["batch", "seq"]) is { } why) return why;
        for (var layer = 0; layer < io.PastKeys.Length; layer++)
            foreach (var p in new[] { io.PastKeys[layer], io.PastValues[layer] })
                if (Bind(g.Inputs[p], ["batch", $"cache.KvHeads[{layer}]", "cache.Length", "cache.HeadDim"]) is { } why2) return why2;
        foreach (var sym in _symbolLocals.Keys)
            if (!sources.ContainsKey(sym)) return $"symbol '{sym}' is not set by a decoding step";
        _stepPastSymbol = sources.FirstOrDefault(x => x.Value == "cache.Length" && _symbolLocals.ContainsKey(x.Key)).Key;
        w.Line("if (batch < 1 || seq < 1 || tokens.Length != batch * seq) throw new ArgumentException($\"expected {batch} row(s) of {seq} tokens, got {tokens.Length}\");");
        var heads = io.KvHeads.Distinct().Count() == 1 ? $"{io.KvHeads[0]}" : $"[{string.Join(", ", io.KvHeads)}]";
        w.Line($"if (!cache.HasLayout(stackalloc int[] {{ {string.Join(", ", io.KvHeads)} }}, {io.HeadDim}, batch)) throw new ArgumentException($\"this model needs a KV cache of {io.PastKeys.Length} layers × {heads} heads × {io.HeadDim} for {{batch}} row(s), got {{cache}}\");");
        w.Line("if (cache.Length + seq > cache.Capacity) throw new ArgumentException($\"the KV cache holds {cache.Capacity} positions; {cache.Length} + {seq} do not fit\");");
        foreach (var c in checks.Distinct().Where(c => !c.StartsWith("cache.", StringComparison.Ordinal))) w.Line($"if ({c}) throw new ArgumentException(\"this model was compiled for fixed dims: {CSharp.Comment(c.Replace("!=", "must be"))}\");");
        foreach (var (sym, local) in _symbolLocals) w.Line($"long {local} = {sources[sym]};");
        return null;
    }
}
