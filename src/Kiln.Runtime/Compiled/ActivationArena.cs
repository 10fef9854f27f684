using System.Runtime.InteropServices;

namespace Kiln.Runtime.Compiled;

/// <summary>
/// The one block of memory a planned model's intermediate values live in. The compiler assigns each value a slot
/// from liveness analysis (values whose lifetimes do not overlap share one); the generated code computes the slot
/// sizes from the call's dims, reserves their sum once, and slices. The block only grows, so calls with shapes
/// seen before allocate nothing.
/// </summary>
public sealed class ActivationArena
{
    /// <summary>Slot offsets are multiples of this many bytes (a cache line, an AVX-512 vector).</summary>
    public const int Alignment = 64;

    private byte[] _bytes = [];

    public long Capacity => _bytes.Length;

    /// <summary>Makes room for <paramref name="bytes"/> bytes (the contents are not kept when it grows).</summary>
    public void Reserve(long bytes)
    {
        if (bytes <= _bytes.Length) return;
        if (bytes > Array.MaxLength) throw new KernelException($"the activations of this call need {bytes:N0} bytes, more than one arena can hold");
        // Growing by half again at least: calls whose shapes creep upward reallocate a few times, not every time.
        bytes = Math.Min(Array.MaxLength, Math.Max(bytes, _bytes.Length + _bytes.Length / 2L));
        MemoryBudget.Current?.Reserve(bytes, [checked((int)bytes)], DType.U8);
        _bytes = GC.AllocateUninitializedArray<byte>((int)bytes, pinned: true);
    }

    /// <summary>The slot at <paramref name="offset"/> bytes holding <paramref name="count"/> elements.</summary>
    public Span<T> Slot<T>(long offset, long count) where T : unmanaged =>
        MemoryMarshal.Cast<byte, T>(_bytes.AsSpan(checked((int)offset), checked((int)(count * Marshal.SizeOf<T>()))));

    /// <summary>Rounds a slot size up to <see cref="Alignment"/>.</summary>
    public static long Align(long bytes) => (bytes + Alignment - 1) / Alignment * Alignment;

    /// <summary>The aligned size of a slot shared by values of these sizes: the largest of them (a stack-held list, no allocation).</summary>
    public static long AlignLargest(params ReadOnlySpan<long> sizes)
    {
        var largest = 0L;
        foreach (var s in sizes) largest = Math.Max(largest, s);
        return Align(largest);
    }
}
