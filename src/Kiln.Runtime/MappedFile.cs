using System.IO.MemoryMappedFiles;

namespace Kiln.Runtime;

/// <summary>A read-only memory-mapped file that tensors point into. Owned by whatever holds tensors over it (an imported model, a weight blob).</summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private bool _disposed;

    public MappedFile(string path)
    {
        Path = path;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Length = stream.Length;
        if (Length == 0) return; // an empty file cannot be mapped; nothing can point into it either.
        _file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
    }

    public string Path { get; }

    /// <summary>Asks the kernel to back the mapping with huge pages where it can (Linux; fewer TLB misses when kernels stream gigabytes of weights).</summary>
    public void AdviseHugePages()
    {
        if (OperatingSystem.IsLinux() && _base is not null && Length > 0) _ = Madvise(_base, (nuint)Length, 14);
    }

    /// <summary>
    /// Drops this process's resident pages over a range (Linux: MADV_DONTNEED; elsewhere nothing). The mapping is
    /// read-only, so the bytes stay valid: a later read faults them back in from the page cache or the file. A pass that
    /// has read a weight once (hashing, quantizing) calls this so that a compile of a model larger than memory does not
    /// keep every page it has touched resident.
    /// </summary>
    public void ReleaseResident(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!OperatingSystem.IsLinux() || _base is null || length <= 0) return;
        var page = Environment.SystemPageSize;
        // Whole pages inside the mapping: the first page of the range and the page holding its end.
        var start = Math.Max(0, offset) / page * page;
        var end = Math.Min(Length, offset + length);
        if (end <= start) return;
        _ = Madvise(_base + start, (nuint)(end - start), 4);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(void* address, nuint length, int advice);

    public long Length { get; }

    /// <summary>Where the mapping starts in this process (0 for an empty file).</summary>
    public nint Address => (nint)_base;

    public ReadOnlySpan<byte> Span(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} outside {Path} ({Length} bytes)");
        if (length > int.MaxValue) throw new InvalidOperationException($"tensor of {length} bytes exceeds a single span");
        return length == 0 ? [] : new ReadOnlySpan<byte>(_base + offset, (int)length);
    }

    /// <summary>A memory block over part of the mapping (valid while the file is open).</summary>
    public ReadOnlyMemory<byte> Memory(long offset, long length)
    {
        Span(offset, length);
        return length == 0 ? ReadOnlyMemory<byte>.Empty : new PointerMemory(_base + offset, (int)length).Memory;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view?.SafeMemoryMappedViewHandle.ReleasePointer();
        _view?.Dispose();
        _file?.Dispose();
    }
}
