using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
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
}

/// <summary>How a blob file's bytes reach memory.</summary>
public enum WeightLoading
{
    /// <summary>Memory-mapped, zero copy (huge pages requested).</summary>
    Map,

    /// <summary>Read into anonymous memory backed by huge pages where the OS allows: faster decoding, one private copy.</summary>
    Copy,
}

/// <summary>One entry of a blob's table.</summary>
public sealed record WeightEntry(string Name, DType Type, WeightFormat Format, int[] Shape, long Offset, long Length);

/// <summary>A blob is truncated, altered, of an unknown format version, or not the one the model was compiled with (KILN0025).</summary>
public sealed class WeightBlobException(string message) : Exception("KILN0025: " + message);

/// <summary>
/// A compiled model's weights: one <c>.kiln</c> file. Layout (little-endian):
/// <code>
/// 0    magic "KILNBLOB"             8 bytes
/// 8    format version              u32 (this runtime reads 1)
/// 12   tensor count                u32
/// 16   model hash                  32 bytes: SHA-256 the compiler computed over the model it compiled
/// 48   table length                u64 (the table starts at 128)
/// 56   data offset                 u64 (64-byte aligned)
/// 64   data length                 u64
/// 72   payload hash                32 bytes: SHA-256 of every byte from 128 to the end
/// 104  zeros to 128
/// 128  table: per tensor: u16 name length, UTF-8 name, u8 element type, u8 format, u8 rank, i64 dims[rank],
///      u64 offset (from the data start, 64-byte aligned), u64 length
/// data tensors, each starting on a 64-byte boundary
/// </code>
/// Loading checks the magic, the version, the sizes against the file's length, the payload hash (a flipped byte is
/// refused) and the model hash the generated code expects. Tensors are views into the mapped file (zero copy) or
/// into one aligned native block (loaded from a stream, as for an embedded resource).
/// </summary>
public sealed unsafe class WeightBlob : IDisposable
{
    public static ReadOnlySpan<byte> Magic => "KILNBLOB"u8;

    public const uint FormatVersion = 1;

    public const int HeaderSize = 128;

    public const int Alignment = 64;

    private readonly MappedFile? _file;
    private byte* _native;
    private readonly long _length;
    private readonly long _dataOffset;
    private readonly Dictionary<string, WeightEntry> _entries = new(StringComparer.Ordinal);

    private WeightBlob(string source, MappedFile? file, byte* native, long length, string? expectedModelHash)
    {
        Source = source;
        _file = file;
        _native = native;
        _length = length;
        var all = Bytes(0, length);
        if (length < HeaderSize) throw Bad($"is {length} bytes, shorter than the {HeaderSize}-byte header (truncated?)");
        if (!all[..8].SequenceEqual(Magic)) throw Bad("does not start with the KILNBLOB magic: not a Kiln weight blob");
        Version = BinaryPrimitives.ReadUInt32LittleEndian(all[8..]);
        if (Version != FormatVersion) throw Bad($"has format version {Version}; this runtime reads version {FormatVersion} (recompile the model with this Kiln)");
        var count = BinaryPrimitives.ReadUInt32LittleEndian(all[12..]);
        ModelHash = Convert.ToHexStringLower(all.Slice(16, 32));
        var tableLength = BinaryPrimitives.ReadUInt64LittleEndian(all[48..]);
        var dataOffset = BinaryPrimitives.ReadUInt64LittleEndian(all[56..]);
        var dataLength = BinaryPrimitives.ReadUInt64LittleEndian(all[64..]);
        if (HeaderSize + tableLength > dataOffset || dataOffset % Alignment != 0 || dataOffset + dataLength != (ulong)length)
            throw Bad($"header says table {tableLength} bytes, data at {dataOffset} for {dataLength} bytes, but the file is {length} bytes (truncated or altered)");
        var payloadHash = SHA256.HashData(all[HeaderSize..]);
        if (!payloadHash.AsSpan().SequenceEqual(all.Slice(72, 32)))
            throw Bad("content does not match its hash: the file was altered or damaged");
        if (expectedModelHash is not null && expectedModelHash != ModelHash)
            throw Bad($"holds the weights of model {ModelHash[..16]}, but the code was compiled for model {expectedModelHash[..16]}: use the .kiln written with this code");
        _dataOffset = (long)dataOffset;
        var table = all.Slice(HeaderSize, (int)tableLength);
        var pos = 0;
        for (var i = 0; i < count; i++)
        {
            var nameLength = BinaryPrimitives.ReadUInt16LittleEndian(table[pos..]);
            var name = Encoding.UTF8.GetString(table.Slice(pos + 2, nameLength));
            pos += 2 + nameLength;
            var type = (DType)table[pos];
            var format = (WeightFormat)table[pos + 1];
            var rank = table[pos + 2];
            pos += 3;
            var shape = new int[rank];
            for (var d = 0; d < rank; d++, pos += 8) shape[d] = checked((int)BinaryPrimitives.ReadInt64LittleEndian(table[pos..]));
            var offset = (long)BinaryPrimitives.ReadUInt64LittleEndian(table[pos..]);
            var len = (long)BinaryPrimitives.ReadUInt64LittleEndian(table[(pos + 8)..]);
            pos += 16;
            if (offset % Alignment != 0 || offset + len > (long)dataLength) throw Bad($"tensor '{name}' lies outside the data section");
            _entries[name] = new WeightEntry(name, type, format, shape, offset, len);
        }
        Entries = _entries.Values.ToList();
    }

    /// <summary>Where the blob came from (a path or a resource name), for messages.</summary>
    public string Source { get; }

    public uint Version { get; }

    /// <summary>The hash of the model the blob was written for (hex).</summary>
    public string ModelHash { get; }

    public IReadOnlyList<WeightEntry> Entries { get; }

    /// <summary>Where the blob's bytes lie in this process (the mapping or the copy), for tools that report how they are paged in.</summary>
    public (nint Address, long Length) Region => (_file is not null ? _file.Address : (nint)_native, _length);

    private WeightBlobException Bad(string what) => new($"weight blob {Source} {what}");

    private ReadOnlySpan<byte> Bytes(long offset, long length) =>
        _file is not null ? _file.Span(offset, length) : new ReadOnlySpan<byte>(_native + offset, checked((int)length));

    /// <summary>
    /// Opens a blob file: mapped (zero copy, pages shared with other processes) or copied into anonymous memory backed
    /// by huge pages where the OS allows (decoding streams every weight per token: fewer TLB misses measured ~30% faster
    /// on a 440 MB model). <paramref name="expectedModelHash"/>: the hash the generated code was compiled with.
    /// </summary>
    public static WeightBlob Open(string path, string? expectedModelHash = null, WeightLoading loading = WeightLoading.Map)
    {
        if (loading == WeightLoading.Copy)
        {
            try
            {
                using var f = File.OpenRead(path);
                return Load(f, path, expectedModelHash);
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
            return new WeightBlob(path, file, null, file.Length, expectedModelHash);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Reads a blob from a stream (an embedded resource) into one 64-byte-aligned native block.</summary>
    public static WeightBlob Load(Stream stream, string source, string? expectedModelHash = null)
    {
        var length = stream.CanSeek ? stream.Length - stream.Position : throw new WeightBlobException($"weight blob {source}: the stream cannot tell its length");
        // 2 MiB alignment and MADV_HUGEPAGE let Linux back the weights with huge pages.
        var native = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, length), 2 << 20);
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
            return new WeightBlob(source, null, native, length, expectedModelHash);
        }
        catch
        {
            NativeMemory.AlignedFree(native);
            throw;
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(void* address, nuint length, int advice);

    /// <summary>A tensor of the blob, as a view (no copy). The name and the shape the code expects are checked.</summary>
    public Tensor Get(string name, DType type, int[] shape)
    {
        if (!_entries.TryGetValue(name, out var e)) throw Bad($"has no tensor '{name}'");
        if (e.Type != type || !e.Shape.AsSpan().SequenceEqual(shape) || e.Format != WeightFormat.Dense)
            throw Bad($"holds '{name}' as {e.Type.Name()}[{string.Join(", ", e.Shape)}] ({e.Format}), but the code expects {type.Name()}[{string.Join(", ", shape)}]");
        var start = _dataOffset + e.Offset;
        Memory<byte> memory = e.Length == 0 ? Memory<byte>.Empty
            : _file is not null ? MemoryMarshal.AsMemory(_file.Memory(start, e.Length))
            : new PointerMemory(_native + start, checked((int)e.Length)).Memory;
        return Tensor.Wrap(type, shape, memory, persistent: true);
    }

    public void Dispose()
    {
        _file?.Dispose();
        if (_native is not null)
        {
            NativeMemory.AlignedFree(_native);
            _native = null;
        }
    }
}
