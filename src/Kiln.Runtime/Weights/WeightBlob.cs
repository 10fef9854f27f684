using System.Buffers.Binary;
using System.IO.Hashing;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;

namespace Kiln.Runtime.Weights;

/// <summary>How a tensor's bytes are laid out in a blob. One registry: every packed form a pass or kernel uses is listed here.</summary>
public enum WeightFormat : byte
{
    /// <summary>Row-major elements of the tensor's type, as in ONNX.</summary>
    Dense = 0,

    /// <summary>8-bit codes of a quantized matrix, one byte each, rows padded to 32 (<see cref="QuantizedLayout"/>).</summary>
    Int8Rows = 1,

    /// <summary>4-bit codes of a quantized matrix, 16 bytes per 32-code block (<see cref="QuantizedLayout"/>).</summary>
    Int4Blocks = 2,

    /// <summary>Bitmask panels of a sparse f32 matrix: u32 masks, packed non-zeros, panel starts (<see cref="SparseLayout"/>).</summary>
    SparsePanels = 3,
}

/// <summary>How a blob file's bytes reach memory.</summary>
public enum WeightLoading
{
    /// <summary>Memory-mapped, zero copy (huge pages requested).</summary>
    Map,

    /// <summary>Read into anonymous memory backed by huge pages where the OS allows: faster decoding, one private copy.</summary>
    Copy,
}

/// <summary>When a blob's data chunks are checked against their hashes.</summary>
public enum WeightVerification
{
    /// <summary>
    /// Nothing of the data is hashed at open: the model checks every chunk on its first run (a run reads every weight),
    /// so opening a multi-gigabyte mapped blob is immediate and pages come in as they are used.
    /// </summary>
    Lazy,

    /// <summary>Every chunk is checked before the open returns (embedded blobs, copies: their bytes are read anyway).</summary>
    Full,
}

/// <summary>One entry of a blob's table.</summary>
public sealed record WeightEntry(string Name, DType Type, WeightFormat Format, int[] Shape, long Offset, long Length);

/// <summary>A blob is truncated, altered, of an unknown format version, or not the one the model was compiled with (KILN0025).</summary>
public sealed class WeightBlobException(string message) : Exception("KILN0025: " + message);

/// <summary>
/// A compiled model's weights: one <c>.kiln</c> file. Layout (little-endian):
/// <code>
/// 0    magic "KILNBLOB"             8 bytes
/// 8    format version              u32 (this runtime reads 2)
/// 12   tensor count                u32
/// 16   model hash                  32 bytes: SHA-256 the compiler computed over the model it compiled
/// 48   table length                u64 (the table starts at 128)
/// 56   data offset                 u64 (64-byte aligned)
/// 64   data length                 u64
/// 72   chunk size                  u32 (a power of two; the data is hashed in chunks of it)
/// 76   chunk count                 u32 (data length / chunk size, rounded up)
/// 80   index hash                  16 bytes: XxHash128 of bytes 0–80 and 96–128 of this header, the table and the chunk hashes
/// 96   zeros to 128                (reserved: must be zero)
/// 128  table: per tensor: u16 name length, UTF-8 name, u8 element type, u8 format, u8 rank, i64 dims[rank],
///      u64 offset (from the data start, 64-byte aligned), u64 length
///      chunk hashes: u64 XxHash3 of each data chunk (the last may be shorter)
/// data tensors, each starting on a 64-byte boundary
/// </code>
/// Opening checks the header field by field against the file's length, then the index hash (so no header byte
/// can change unnoticed), then the model hash the generated code expects. The data is checked chunk by chunk:
/// lazily, on the model's first run (<see cref="WeightVerification.Lazy"/>, the default for mapped files), or at
/// open (<see cref="WeightVerification.Full"/>). Offsets are 64-bit: a blob may exceed 2 GiB, each tensor is its own
/// view (one tensor stays below 2 GiB; the compiler refuses larger ones). Tensors are views into the mapped file
/// (zero copy) or into one aligned native block (a copy, or loaded from a stream as for an embedded resource).
/// </summary>
public sealed unsafe class WeightBlob : IDisposable
{
    public static ReadOnlySpan<byte> Magic => "KILNBLOB"u8;

    public const uint FormatVersion = 2;

    public const int HeaderSize = 128;

    public const int Alignment = 64;

    /// <summary>Bytes per hashed data chunk in blobs this Kiln writes.</summary>
    public const int DefaultChunkSize = 4 << 20;

    /// <summary>Where the index hash sits in the header (16 bytes), and the reserved bytes after it.</summary>
    public const int IndexHashOffset = 80, ReservedOffset = 96;

    private readonly MappedFile? _file;
    private byte* _native;
    private readonly long _length;
    private readonly long _dataOffset;
    private readonly long _dataLength;
    private readonly int _chunkSize;
    private readonly ulong[] _chunkHashes;
    private readonly bool[] _chunkVerified;
    private readonly Lock _verifyGate = new();
    private volatile bool _allVerified;
    private WeightBlobException? _verifyFailure;
    private long _bytesVerified;
    private readonly Lock _lifeGate = new();
    private int _users;
    private bool _disposed;
    private readonly Dictionary<string, WeightEntry> _entries = new(StringComparer.Ordinal);

    private WeightBlob(string source, MappedFile? file, byte* native, long length, string? expectedModelHash, WeightVerification verification)
    {
        Source = source;
        _file = file;
        _native = native;
        _length = length;
        if (length < HeaderSize) throw Bad($"is {length} bytes, shorter than the {HeaderSize}-byte header (truncated?)");
        var header = Bytes(0, HeaderSize);
        if (!header[..8].SequenceEqual(Magic)) throw Bad("does not start with the KILNBLOB magic: not a Kiln weight blob");
        Version = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        if (Version != FormatVersion) throw Bad($"has format version {Version}; this runtime reads version {FormatVersion} (recompile the model with this Kiln)");
        var count = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
        var tableLength = BinaryPrimitives.ReadUInt64LittleEndian(header[48..]);
        var dataOffset = BinaryPrimitives.ReadUInt64LittleEndian(header[56..]);
        var dataLength = BinaryPrimitives.ReadUInt64LittleEndian(header[64..]);
        var chunkSize = BinaryPrimitives.ReadUInt32LittleEndian(header[72..]);
        var chunkCount = BinaryPrimitives.ReadUInt32LittleEndian(header[76..]);
        if (header[ReservedOffset..].ContainsAnyExcept((byte)0)) throw Bad($"has non-zero bytes in its reserved header bytes {ReservedOffset}–{HeaderSize} (altered?)");
        // Every size is checked against the file before anything is read at an offset the header gives.
        var sizesAgree = chunkSize is >= 4096 and <= 1 << 30 && BitOperations.IsPow2(chunkSize)
            && chunkCount == (dataLength + chunkSize - 1) / chunkSize
            && tableLength <= int.MaxValue && (ulong)HeaderSize + tableLength + 8UL * chunkCount <= dataOffset
            && dataOffset % Alignment == 0 && dataOffset <= (ulong)length && dataLength == (ulong)length - dataOffset;
        if (!sizesAgree)
            throw Bad($"header says table {tableLength} bytes, {chunkCount} chunks of {chunkSize} bytes, data at {dataOffset} for {dataLength} bytes, but the file is {length} bytes (truncated or altered)");
        var table = Bytes(HeaderSize, (long)tableLength);
        var hashes = Bytes(HeaderSize + (long)tableLength, 8L * chunkCount);
        var index = new XxHash128();
        index.Append(header[..IndexHashOffset]);
        index.Append(header[ReservedOffset..]);
        index.Append(table);
        index.Append(hashes);
        if (!index.GetCurrentHash().AsSpan().SequenceEqual(header.Slice(IndexHashOffset, 16)))
            throw Bad("header or table does not match its hash: the file was altered or damaged");
        ModelHash = Convert.ToHexStringLower(header.Slice(16, 32));
        if (expectedModelHash is not null && expectedModelHash != ModelHash)
            throw Bad($"holds the weights of model {ModelHash[..16]}, but the code was compiled for model {expectedModelHash[..16]}: use the .kiln written with this code");
        _dataOffset = (long)dataOffset;
        _dataLength = (long)dataLength;
        _chunkSize = (int)chunkSize;
        _chunkHashes = new ulong[chunkCount];
        for (var i = 0; i < _chunkHashes.Length; i++) _chunkHashes[i] = BinaryPrimitives.ReadUInt64LittleEndian(hashes[(8 * i)..]);
        _chunkVerified = new bool[chunkCount];
        ReadTable(table, count);
        Entries = _entries.Values.ToList();
        if (verification == WeightVerification.Full) EnsureVerified();
    }

    /// <summary>The table's entries, each checked against the data section (the index hash already vouches for them; this guards against a writer bug).</summary>
    private void ReadTable(ReadOnlySpan<byte> table, uint count)
    {
        var pos = 0;
        ReadOnlySpan<byte> Take(ReadOnlySpan<byte> t, int n)
        {
            if (n < 0 || pos + n > t.Length) throw Bad("has a malformed tensor table (altered, or written by another Kiln)");
            var s = t.Slice(pos, n);
            pos += n;
            return s;
        }
        for (var i = 0; i < count; i++)
        {
            var nameLength = BinaryPrimitives.ReadUInt16LittleEndian(Take(table, 2));
            var name = Encoding.UTF8.GetString(Take(table, nameLength));
            var kinds = Take(table, 3);
            var (type, format, rank) = ((DType)kinds[0], (WeightFormat)kinds[1], kinds[2]);
            var shape = new int[rank];
            for (var d = 0; d < rank; d++)
            {
                var dim = BinaryPrimitives.ReadInt64LittleEndian(Take(table, 8));
                if (dim is < 0 or > int.MaxValue) throw Bad($"gives tensor '{name}' a dimension of {dim}");
                shape[d] = (int)dim;
            }
            var offset = BinaryPrimitives.ReadUInt64LittleEndian(Take(table, 8));
            var len = BinaryPrimitives.ReadUInt64LittleEndian(Take(table, 8));
            if (!Enum.IsDefined(type) || !Enum.IsDefined(format)) throw Bad($"gives tensor '{name}' an unknown element type or format ({kinds[0]}, {kinds[1]})");
            if (offset % Alignment != 0 || offset > (ulong)_dataLength || len > (ulong)_dataLength - offset) throw Bad($"places tensor '{name}' outside the data section");
            if (!_entries.TryAdd(name, new WeightEntry(name, type, format, shape, (long)offset, (long)len))) throw Bad($"holds tensor '{name}' twice");
        }
        if (pos != table.Length) throw Bad("has a malformed tensor table (altered, or written by another Kiln)");
    }

    /// <summary>Where the blob came from (a path or a resource name), for messages.</summary>
    public string Source { get; }

    public uint Version { get; }

    /// <summary>The hash of the model the blob was written for (hex).</summary>
    public string ModelHash { get; }

    public IReadOnlyList<WeightEntry> Entries { get; }

    /// <summary>Where the blob's bytes lie in this process (the mapping or the copy), for tools that report how they are paged in.</summary>
    public (nint Address, long Length) Region => (_file is not null ? _file.Address : (nint)_native, _length);

    /// <summary>Data bytes checked against their chunk hashes so far (0 after a lazy open).</summary>
    public long BytesVerified => Interlocked.Read(ref _bytesVerified);

    /// <summary>Whether every data chunk has been checked.</summary>
    public bool FullyVerified => _allVerified;

    private WeightBlobException Bad(string what) => new($"weight blob {Source} {what}");

    private ReadOnlySpan<byte> Bytes(long offset, long length) =>
        _file is not null ? _file.Span(offset, length) : new ReadOnlySpan<byte>(_native + offset, checked((int)length));

    /// <summary>
    /// Checks every data chunk not checked yet against its hash; a damaged chunk is refused (KILN0025) now and on
    /// every later call. Cheap once everything is checked; safe from several threads.
    /// </summary>
    public void EnsureVerified()
    {
        if (_allVerified) return;
        lock (_verifyGate)
        {
            if (_verifyFailure is not null) throw _verifyFailure;
            if (_allVerified) return;
            ObjectDisposedException.ThrowIf(_disposed, this);
            for (var i = 0; i < _chunkHashes.Length; i++)
            {
                if (_chunkVerified[i]) continue;
                var start = (long)i * _chunkSize;
                var length = Math.Min(_chunkSize, _dataLength - start);
                if (XxHash3.HashToUInt64(Bytes(_dataOffset + start, length)) != _chunkHashes[i])
                {
                    var tensor = _entries.Values.FirstOrDefault(e => e.Offset < start + length && e.Offset + e.Length > start);
                    _verifyFailure = Bad($"content does not match its hash in data bytes {start}–{start + length}{(tensor is null ? "" : $" (tensor '{tensor.Name}')")}: the file was altered or damaged");
                    throw _verifyFailure;
                }
                _chunkVerified[i] = true;
                Interlocked.Add(ref _bytesVerified, length);
            }
            _allVerified = true;
        }
    }

    /// <summary>
    /// Opens a blob file: mapped (zero copy, pages shared with other processes) or copied into anonymous memory backed
    /// by huge pages where the OS allows (decoding streams every weight per token: fewer TLB misses measured ~30% faster
    /// on a 440 MB model). <paramref name="expectedModelHash"/>: the hash the generated code was compiled with.
    /// <paramref name="verification"/>: when the data is checked (default: lazily when mapped, at open when copied).
    /// </summary>
    public static WeightBlob Open(string path, string? expectedModelHash = null, WeightLoading loading = WeightLoading.Map, WeightVerification? verification = null)
    {
        if (loading == WeightLoading.Copy)
        {
            try
            {
                using var f = File.OpenRead(path);
                return Load(f, path, expectedModelHash, verification ?? WeightVerification.Full);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new WeightBlobException($"weight blob {path} cannot be read: {e.Message}");
            }
        }
        MappedFile file;
        try
        {
            file = new MappedFile(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new WeightBlobException($"weight blob {path} cannot be read: {e.Message}");
        }
        try
        {
            file.AdviseHugePages();
            return new WeightBlob(path, file, null, file.Length, expectedModelHash, verification ?? WeightVerification.Lazy);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Reads a blob from a stream (an embedded resource) into one aligned native block; checked in full by default.</summary>
    public static WeightBlob Load(Stream stream, string source, string? expectedModelHash = null, WeightVerification verification = WeightVerification.Full)
    {
        var length = stream.CanSeek ? stream.Length - stream.Position : throw new WeightBlobException($"weight blob {source}: the stream cannot tell its length");
        byte* native;
        try
        {
            // 2 MiB alignment and MADV_HUGEPAGE let Linux back the weights with huge pages.
            native = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, length), 2 << 20);
        }
        catch (OutOfMemoryException)
        {
            throw new WeightBlobException($"weight blob {source} ({length:N0} bytes) does not fit in memory: open it mapped (WeightLoading.Map)");
        }
        if (OperatingSystem.IsLinux() && length > 0) _ = Madvise(native, (nuint)length, 14);
        try
        {
            long read = 0;
            while (read < length)
            {
                var n = stream.Read(new Span<byte>(native + read, (int)Math.Min(int.MaxValue, length - read)));
                if (n == 0) throw new WeightBlobException($"weight blob {source} ended after {read} of {length} bytes");
                read += n;
            }
            return new WeightBlob(source, null, native, length, expectedModelHash, verification);
        }
        catch
        {
            NativeMemory.AlignedFree(native);
            throw;
        }
    }

    [DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(void* address, nuint length, int advice);

    /// <summary>A tensor of the blob, as a view (no copy). The name and the shape the code expects are checked.</summary>
    public Tensor Get(string name, DType type, int[] shape)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (!_entries.TryGetValue(name, out var e)) throw Bad($"has no tensor '{name}'");
        if (e.Type != type || !e.Shape.AsSpan().SequenceEqual(shape) || e.Format != WeightFormat.Dense)
            throw Bad($"holds '{name}' as {e.Type.Name()}[{string.Join(", ", e.Shape)}] ({e.Format}), but the code expects {type.Name()}[{string.Join(", ", shape)}]");
        if (e.Length > int.MaxValue) throw Bad($"holds '{name}' in {e.Length:N0} bytes: one tensor view holds at most 2 GiB");
        var start = _dataOffset + e.Offset;
        Memory<byte> memory = e.Length == 0 ? Memory<byte>.Empty
            : _file is not null ? MemoryMarshal.AsMemory(_file.Memory(start, e.Length))
            : new PointerMemory(_native + start, (int)e.Length).Memory;
        return Tensor.Wrap(type, shape, memory, persistent: true);
    }

    /// <summary>Whether <see cref="Dispose"/> was called (the memory stays while a model still retains the blob).</summary>
    public bool IsDisposed
    {
        get { lock (_lifeGate) return _disposed; }
    }

    /// <summary>
    /// Keeps the blob's memory alive for a model whose tensors point into it: <see cref="Dispose"/> then frees it only
    /// after the last <see cref="Release"/>, so disposing a blob under a live model never leaves it reading freed memory.
    /// </summary>
    public void Retain()
    {
        lock (_lifeGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _users++;
        }
    }

    /// <summary>Ends a <see cref="Retain"/>.</summary>
    public void Release()
    {
        lock (_lifeGate)
        {
            if (_users == 0) throw new InvalidOperationException("WeightBlob.Release without a matching Retain");
            if (--_users == 0 && _disposed) Free();
        }
    }

    public void Dispose()
    {
        lock (_lifeGate)
        {
            if (_disposed) return;
            _disposed = true;
            if (_users == 0) Free();
        }
    }

    private void Free()
    {
        _file?.Dispose();
        if (_native is not null)
        {
            NativeMemory.AlignedFree(_native);
            _native = null;
        }
    }
}
