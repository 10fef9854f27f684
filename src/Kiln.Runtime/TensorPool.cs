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

    public byte[]? Rent(int length)
    {
        lock (_free)
        {
            if (!_free.TryGetValue(length, out var s) || s.Count == 0) return null;
            _held -= length;
            return s.Pop();
        }
    }

    /// <summary>Takes back a buffer nothing references any more.</summary>
    public void Return(byte[] buffer)
    {
        lock (_free)
        {
            if (_held + buffer.Length > Capacity) return;
            if (!_free.TryGetValue(buffer.Length, out var s)) _free[buffer.Length] = s = new Stack<byte[]>();
            s.Push(buffer);
            _held += buffer.Length;
        }
    }
}
