namespace Kiln.Runtime;

/// <summary>
/// Bytes a run may hold in tensors at once. Checked before every allocation, so a model whose shapes ask for
/// more than the budget (a 11 GB ConstantOfShape) fails with a clear error instead of filling the machine.
/// </summary>
public sealed class MemoryBudget(long limitBytes)
{
    private static readonly AsyncLocal<MemoryBudget?> CurrentBudget = new();

    public long Limit { get; } = limitBytes;

    public long InUse { get; private set; }

    public long Peak { get; private set; }

    /// <summary>The budget allocations on this logical thread count against; null means unlimited.</summary>
    public static MemoryBudget? Current
    {
        get => CurrentBudget.Value;
        set => CurrentBudget.Value = value;
    }

    /// <summary>Default: half the memory the runtime may use (physical memory or the container's limit).</summary>
    public static long DefaultLimit => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2;

    public void Reserve(long bytes, ReadOnlySpan<int> shape, DType type)
    {
        lock (this)
        {
            if (InUse + bytes > Limit)
                throw new MemoryBudgetException(
                    $"a {type.Name()}[{string.Join(", ", shape.ToArray())}] tensor needs {Format(bytes)}, which with the {Format(InUse)} in use exceeds the memory budget of {Format(Limit)}");
            InUse += bytes;
            if (InUse > Peak) Peak = InUse;
        }
    }

    /// <summary>Counts scratch memory a kernel needs (index tables, widened copies) against the current budget.</summary>
    public static void Scratch(long count, int elementSize)
    {
        if (Current is { } b) b.Reserve(count * elementSize, [checked((int)Math.Min(count, int.MaxValue))], DType.U8);
    }

    public void Release(long bytes)
    {
        lock (this) InUse = Math.Max(0, InUse - bytes);
    }

    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.0} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} bytes",
    };
}

public sealed class MemoryBudgetException(string message) : Exception(message);
