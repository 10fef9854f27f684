using Kiln.CodeGen.Backends;
using Kiln.Ir;
using Kiln.Ir.Ops;

namespace Kiln.CodeGen.Planning;

/// <summary>
/// Input and output positions of a decoder whose I/O follows the <c>input_ids</c>, <c>past_key_values.N.key/value</c>
/// → <c>logits</c>, <c>present.N.key/value</c> convention; <see cref="KvHeads"/> per layer (they may differ after structured pruning).
/// </summary>
public sealed record DecoderIo(int InputIds, int[] PastKeys, int[] PastValues, int Logits, int[] PresentKeys, int[] PresentValues, int[] KvHeads, int HeadDim, long? Vocabulary);

/// <summary>
/// The decoder convention's part of planning: which inputs and outputs a decoding step binds, and where its outputs
/// live: the logits in the caller's span (computing only last positions when asked), each present key and value in
/// the KV cache, appended in place after its past. Ops are known only by traits: a present is a node that
/// <see cref="OpTraits.AppendsAlongAxis"/> to its past, read only by nodes that <see cref="OpTraits.ReadsKeyValueCache"/>.
/// </summary>
public static class DecoderConvention
{
    public static DecoderIo? Of(Graph g)
    {
        int In(string name) => g.Inputs.FindIndex(v => v.Name == name);
        int Out(string name) => g.Outputs.FindIndex(o => o.Name == name);
        var ids = In("input_ids");
        var logits = Out("logits");
        if (ids < 0 || logits < 0) return null;
        var layers = Enumerable.Range(0, 1024).TakeWhile(i => In($"past_key_values.{i}.key") >= 0).ToList();
        if (layers.Count == 0) return null;
        int[] pastK = [.. layers.Select(i => In($"past_key_values.{i}.key"))], pastV = [.. layers.Select(i => In($"past_key_values.{i}.value"))];
        int[] presK = [.. layers.Select(i => Out($"present.{i}.key"))], presV = [.. layers.Select(i => Out($"present.{i}.value"))];
        if (pastV.Concat(presK).Concat(presV).Any(x => x < 0)) return null;
        // Keys and values of a layer have the same heads; every layer has the same head dim.
        var heads = new int[layers.Count];
        long? dim = null;
        for (var l = 0; l < layers.Count; l++)
            foreach (var p in new[] { pastK[l], pastV[l] })
            {
                if (g.Inputs[p].TensorType is not { Elem: DType.F32, Shape: { Rank: 4 } s } || s[1].Value is not { } h || s[3].Value is not { } d || (dim ?? d) != d
                    || (p == pastV[l] && h != heads[l])) return null;
                heads[l] = (int)h;
                dim = d;
            }
        var vocab = g.Outputs[logits].Value.TensorType is { Shape: { Rank: 3 } ls } ? ls[2].Value : null;
        return new DecoderIo(ids, pastK, pastV, logits, presK, presV, heads, (int)dim!.Value, vocab);
    }

    /// <summary>The storage a decoding step gives a graph input (token ids, or a past read through the cache), or null when it has no place in a step.</summary>
    internal static PlannedStorage? InputStorage(Graph g, DecoderIo io, Value input)
    {
        var index = g.Inputs.IndexOf(input);
        if (index == io.InputIds) return PlannedStorage.Tokens;
        return io.PastKeys.Contains(index) || io.PastValues.Contains(index) ? PlannedStorage.KvPast : null;
    }

    /// <summary>Whether a node may read a past key or value: the append of the new positions to it.</summary>
    internal static bool MayReadPast(Node n, IReadOnlyList<PlannedOperand?> inputs) =>
        n.Has(OpTraits.AppendsAlongAxis) && n.Inputs.Count == 2 && inputs[0]?.Storage == PlannedStorage.KvPast;

    /// <summary>
    /// Places a step's outputs: the logits in the caller's span and every present in the KV cache (int8 when every
    /// attention reading one asks for it). Returns why the graph does not fit the convention, or null.
    /// </summary>
    internal static string? PlaceOutputs(Graph g, DecoderIo io, Dictionary<Value, PlannedOperand> operands, Func<Value, Value> root,
        IReadOnlySet<Node> needed, IPlannedCodeBackend backend, out Node? logitsNode)
    {
        logitsNode = null;
        var logits = root(g.Outputs[io.Logits].Value);
        if (!operands.TryGetValue(logits, out var lo) || lo.Storage != PlannedStorage.Arena || lo.Elem != DType.F32) return "the logits are not computed by a planned node";
        // Only-the-last-positions needs the rows of the classifier's input: a product whose rows are independent,
        // which the backend can compute for the last rows alone.
        if (logits.Producer is not { } cls || !cls.Has(OpTraits.RowIndependent)
            || !backend.ComputesLastRowsOnly(new PlannedNodeContext(cls, new CodeWriter(), cls.Inputs.Select(v => v is null ? null : operands[v]).ToList(), [lo])))
            return "the logits are not one product with the classifier weight";
        logitsNode = cls;
        operands[logits] = lo with { Storage = PlannedStorage.Logits };
        var covered = new HashSet<int> { io.Logits };
        // quantize-kv: the cache holds int8 when every attention reading a present asks for it (one cache, one format).
        var presents = io.PresentKeys.Concat(io.PresentValues).Select(i => g.Outputs[i].Value).ToList();
        var readers = presents.SelectMany(v => v.Uses.Where(u => needed.Contains(u.Node)).Select(u => u.Node)).ToList();
        var int8Cache = readers.Count > 0 && readers.All(r => r.Has(OpTraits.ReadsKeyValueCache) && r.Attr<IntAttr>("kv_bits")?.Value == 8);
        for (var layer = 0; layer < io.PresentKeys.Length; layer++)
            foreach (var (outIndex, pastIndex, part) in new[] { (io.PresentKeys[layer], io.PastKeys[layer], KvPart.Keys), (io.PresentValues[layer], io.PastValues[layer], KvPart.Values) })
            {
                covered.Add(outIndex);
                var v = g.Outputs[outIndex].Value;
                if (v.Producer is not { } cat || !cat.Has(OpTraits.AppendsAlongAxis) || cat.Inputs[0] != g.Inputs[pastIndex] || !operands.TryGetValue(v, out var pv) || pv.Storage != PlannedStorage.Arena)
                    return $"present output '{g.Outputs[outIndex].Name}' is not its past with the new positions appended";
                var axis = cat.AttrInt("axis");
                if (axis != 2 && axis != -2) return $"'{cat.Name}' appends along axis {axis}, not the sequence axis";
                if (v.Uses.Any(u => needed.Contains(u.Node) && !(u.Node.Has(OpTraits.ReadsKeyValueCache) && u.Index is 1 or 2)))
                    return $"present '{v.Name}' is read by something other than attention";
                operands[v] = pv with { Storage = PlannedStorage.KvCache, Layer = layer, Part = part, Int8Cache = int8Cache };
            }
        return covered.Count != g.Outputs.Count ? "the decoder has outputs besides logits and presents" : null;
    }
}
