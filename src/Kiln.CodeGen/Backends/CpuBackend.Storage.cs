using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Ir.Inference;

namespace Kiln.CodeGen.Backends;

/// <summary>
/// The CPU backend's storage: planned values are spans. Arena values are slices of one <c>ActivationArena</c>
/// (reserved once per call, or once per session for a decoding step); outputs are the returned tensors; the KV cache
/// is the caller's <c>KvCache</c>, written in place; shape arithmetic lives on the stack.
/// </summary>
public sealed partial class CpuBackend
{
    public PlannedOperand Bind(PlannedOperand v) => v.Storage switch
    {
        PlannedStorage.Constant => v with { Span = $"{v.WeightField}.Span<{v.Elem switch { DType.F16 => "Half", DType.U32 => "uint", _ => v.ClrType }}>()" },
        PlannedStorage.Input => v with { Span = $"{v.Local}.Span<{v.ClrType}>()" },
        PlannedStorage.Tokens => v with { Span = "tokens" },
        PlannedStorage.Logits => v with { Span = "logits" },
        PlannedStorage.KvCache when v.Int8Cache => v with
        {
            Span = $"cache.{(v.Part == KvPart.Keys ? "Key" : "Value")}Codes({v.Layer})",
            KvScales = $"cache.{(v.Part == KvPart.Keys ? "Key" : "Value")}Scales({v.Layer})",
            HeadStride = $"cache.Capacity * {v.Dims[3]}",
        },
        PlannedStorage.KvCache => v with { Span = $"cache.{v.Part}({v.Layer})", HeadStride = $"cache.Capacity * {v.Dims[3]}" },
        PlannedStorage.KvPast => v with { Span = "" },
        PlannedStorage.Fallback => v with { Span = $"{v.Local}.Span<{v.ClrType}>()" },
        _ => v with { Span = v.Local },
    };

    public void EmitStorage(CodeWriter w, MemoryPlan plan)
    {
        var slots = plan.SlotSizes;
        w.Line($"// Activation arena: {plan.ArenaValues} values in {slots.Count} slots (liveness over {plan.Order.Count} nodes); sizes from this call's dims.");
        for (var s = 0; s < slots.Count; s++)
            w.Line($"long size{s} = ActivationArena.{(slots[s].Count == 1 ? "Align" : "AlignLargest")}({string.Join(", ", slots[s])});");
        if (slots.Count == 0) return;
        w.Line($"_arena.Reserve({string.Join(" + ", Enumerable.Range(0, slots.Count).Select(s => $"size{s}"))});");
        for (var s = 0; s < slots.Count; s++) w.Line($"long slot{s} = {(s == 0 ? "0" : $"slot{s - 1} + size{s - 1}")};");
    }

    public void EmitKnown(CodeWriter w, PlannedOperand v, SymbolicTensor known, IReadOnlyDictionary<string, string> symbolLocals)
    {
        var values = known.Values.Select(d => d.ToExpression(s => symbolLocals[s])!);
        w.Line($"// %{CSharp.Comment(v.Value.Name)} = {CSharp.Comment("[" + string.Join(", ", known.Values.Select(d => d.ToString())) + "]")}, from the input dims");
        // A collection expression for a span local lives on the stack (an inline array): nothing is allocated per call.
        w.Line($"Span<long> {v.Span} = [{string.Join(", ", values)}];");
    }

    public void EmitAllocation(CodeWriter w, PlannedOperand v)
    {
        switch (v.Storage)
        {
            case PlannedStorage.Arena:
                w.Line($"var {v.Span} = _arena.Slot<{v.ClrType}>(slot{v.Slot}, {v.Count});");
                break;
            case PlannedStorage.Output:
                w.Line($"var o{v.OutputIndex} = Tensor.Uninitialized(DType.{v.Elem}, new int[] {{ {string.Join(", ", v.OutputDims)} }});");
                w.Line($"var {v.Span} = o{v.OutputIndex}.Span<{v.ClrType}>();");
                break;
        }
    }

    public void EmitOutputCopy(CodeWriter w, int index, PlannedOperand v)
    {
        w.Line($"var o{index} = Tensor.Uninitialized(DType.{v.Elem}, new int[] {{ {string.Join(", ", v.Dims)} }});");
        w.Line($"{v.Span}.CopyTo(o{index}.Span<{v.ClrType}>());");
    }


    public string EmitTensorOf(CodeWriter w, PlannedOperand v, string local)
    {
        switch (v.Storage)
        {
            case PlannedStorage.Input or PlannedStorage.Fallback: return v.Local;
            case PlannedStorage.Constant: return v.WeightField!;
        }
        w.Line($"var {local} = Generated.Copy(DType.{v.Elem}, new int[] {{ {string.Join(", ", v.Dims)} }}, (ReadOnlySpan<{v.ClrType}>){v.Span});");
        return local;
    }
}
