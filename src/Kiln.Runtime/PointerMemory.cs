namespace Kiln.Runtime;

/// <summary>A <see cref="Memory{T}"/> over unmanaged bytes (a mapped file, an aligned native block) that its owner keeps alive.</summary>
internal sealed unsafe class PointerMemory(byte* pointer, int length) : System.Buffers.MemoryManager<byte>
{
    public override Span<byte> GetSpan() => new(pointer, length);

    public override System.Buffers.MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);

    public override void Unpin() { }

    protected override void Dispose(bool disposing) { }
}
