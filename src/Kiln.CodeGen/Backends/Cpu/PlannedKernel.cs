using Kiln.CodeGen.Backends.Cpu.Ops;

namespace Kiln.CodeGen.Backends.Cpu;

/// <summary>
/// One op's planned CPU kernel, both halves together: whether it takes a node (null, or why not) and the statements it
/// writes for it (one call into the span kernels of <c>Kiln.Runtime.Kernels</c>).
/// </summary>
internal sealed record PlannedKernel(Func<PlannedNodeContext, string?> Unsupported, Action<PlannedNodeContext> Emit)
{
    /// <summary>Whether <see cref="Emit"/> honours <see cref="PlannedNodeContext.LastRowsOnly"/> for this node (a step's logits); null: never.</summary>
    public Func<PlannedNodeContext, bool>? LastRowsOnly { get; init; }

    /// <summary>Whether <see cref="Emit"/> writes several outputs (Split); others write exactly one.</summary>
    public bool SeveralOutputs { get; init; }
}

/// <summary>The planned CPU kernels by qualified op name, gathered from the family files under <c>Cpu/Ops</c>.</summary>
internal static class PlannedKernels
{
    public static IReadOnlyDictionary<string, PlannedKernel> ByOp { get; } = Build();

    private static Dictionary<string, PlannedKernel> Build()
    {
        var d = new Dictionary<string, PlannedKernel>(StringComparer.Ordinal);
        ElementwiseKernels.Register(d);
        ActivationKernels.Register(d);
        NormalizationKernels.Register(d);
        ConvKernels.Register(d);
        PoolingKernels.Register(d);
        ReductionKernels.Register(d);
        ShapeKernels.Register(d);
        IndexingKernels.Register(d);
        MatMulKernels.Register(d);
        FusedKernels.Register(d);
        CompressedKernels.Register(d);
        return d;
    }
}
