namespace Kiln.Runtime;

/// <summary>
/// Bytes a run may hold in tensors at once. Checked before every allocation, so a model whose shapes ask for
/// more than the budget (a 11 GB ConstantOfShape) fails with a clear error instead of filling the machine.
/// </summary>
public sealed class MemoryBudget(long limitBytes)
{
    // Thread-static, not async-local: setting it per call must not allocate (a decoding step allocates nothing), and
    // the kernels' worker threads allocate no tensors.
    [ThreadStatic] private static MemoryBudget? _current;

    public long Limit { get; private set; } = limitBytes;

    public long InUse { get; private set; }

    public long Peak { get; private set; }

    /// <summary>The budget allocations on this thread count against; null means unlimited.</summary>
    public static MemoryBudget? Current
    {
        get => _current;
        set => _current = value;
    }

    /// <summary>
    /// Default per run: a quarter of the memory the runtime may use (physical memory or the container's limit), at
    /// most 8 GiB. A run that needs more is refused before allocating (an 11 GB tensor on a 24 GB machine) instead
    /// of filling the machine; an app raises it per model (<c>MemoryBudgetBytes</c>).
    /// </summary>
    public static long DefaultLimit => Math.Min(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4, 8L << 30);

    /// <summary>Starts a new run under <paramref name="limit"/>: nothing in use.</summary>
    public void Restart(long limit)
    {
        lock (this)
        {
            Limit = limit;
            InUse = 0;
            Peak = 0;
        }
    }

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
