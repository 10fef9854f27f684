namespace Kiln.Runtime;

/// <summary>
/// Recycles tensor buffers by exact byte length. An engine that knows when intermediates die (the evaluator, after
/// their last use) returns their buffers here, and new tensors of the same size reuse them: a run of a large model
/// then allocates its activations once instead of churning the large-object heap every call.
/// </summary>
public sealed class TensorPool
{
    private static readonly AsyncLocal<TensorPool?> CurrentPool = new();
    private readonly Dictionary<int, Stack<byte[]>> _free = [];
    private long _held;

    /// <summary>Bytes the pool may keep idle.</summary>
    public long Capacity { get; init; } = 1L << 30;

    /// <summary>The pool tensor allocations on this logical thread use; null means plain allocation.</summary>
    public static TensorPool? Current
    {
        get => CurrentPool.Value;
        set => CurrentPool.Value = value;
    }

    /// <summary>
    /// The length of the buffer the pool hands out for <paramref name="length"/> bytes: exact up to 1 KiB, then rounded
    /// up to an eighth of the power of two below it (at most 12.5% slack). A tensor that grows a little each call (a KV
    /// cache, one more token per step) then reuses the buffer the previous call freed instead of allocating.
    /// </summary>
    public static int ClassSize(int length)
    {
        if (length <= 1024) return length;
        var step = (int)(System.Numerics.BitOperations.RoundUpToPowerOf2((uint)length + 1) >> 4);
        var rounded = ((long)length + step - 1) / step * step;
        return rounded > Array.MaxLength ? length : (int)rounded;
    }

    /// <summary>A free buffer of <see cref="ClassSize"/>(<paramref name="length"/>) bytes, or null when there is none.</summary>
    public byte[]? Rent(int length)
    {
        var size = ClassSize(length);
        lock (_free)
        {
            if (!_free.TryGetValue(size, out var s) || s.Count == 0) return null;
            _held -= size;
            return s.Pop();
        }
    }

    /// <summary>Takes back a buffer nothing references any more (buffers of other lengths than the pool hands out are left to the GC).</summary>
    public void Return(byte[] buffer)
    {
        if (buffer.Length != ClassSize(buffer.Length)) return;
        lock (_free)
        {
            if (_held + buffer.Length > Capacity) return;
            if (!_free.TryGetValue(buffer.Length, out var s)) _free[buffer.Length] = s = new Stack<byte[]>();
            s.Push(buffer);
            _held += buffer.Length;
        }
    }
}
