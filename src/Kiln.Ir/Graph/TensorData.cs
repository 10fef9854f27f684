using Kiln.Runtime;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Kiln.Ir;

/// <summary>
/// The contents of a constant tensor. Data is never copied once read: embedded tensors keep the memory the
/// importer parsed, external and weight-file tensors are views into a memory-mapped file.
/// </summary>
public abstract class TensorData
{
    private string? _hash;

    protected TensorData(DType elem, long[] dims)
    {
        Elem = elem;
        Dims = dims;
    }

    public DType Elem { get; }

    public long[] Dims { get; }

    public long ElementCount => Dims.Aggregate(1L, (a, b) => a * b);

    public TensorType Type => new(Elem, Shape.Of(Dims));

    /// <summary>Bytes of the data in ONNX raw layout (little-endian, packed for 4-bit types). Not for strings.</summary>
    public abstract ReadOnlySpan<byte> Bytes { get; }

    /// <summary>The same bytes as a memory block (no copy), for engines that hold on to them.</summary>
    public abstract ReadOnlyMemory<byte> Memory { get; }

    public long ByteLength => Elem == DType.String ? 0 : Elem.ByteCount(ElementCount);

    /// <summary>First 16 hex digits of the SHA-256 of the data (strings: each length-prefixed), computed once.</summary>
    public string ContentHash => _hash ??= ComputeHash();

    protected virtual string ComputeHash()
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(Bytes, digest);
        return Convert.ToHexStringLower(digest[..8]);
    }

    /// <summary>
    /// After a full read of a large weight: lets the OS drop the pages this process holds for it, when it lives in a
    /// mapped file (they are read again from the file if needed). Managed data stays as it is.
    /// </summary>
    public virtual void ReleaseResident()
    {
    }

    public T[] ToArray<T>() where T : unmanaged => MemoryMarshal.Cast<byte, T>(Bytes).ToArray();

    /// <summary>Integer contents widened to long (for shape-like constants).</summary>
    public long[] ToInt64Array() => Elem switch
    {
        DType.I64 => ToArray<long>(),
        DType.I32 => ToArray<int>().Select(v => (long)v).ToArray(),
        DType.I16 => ToArray<short>().Select(v => (long)v).ToArray(),
        DType.I8 => ToArray<sbyte>().Select(v => (long)v).ToArray(),
        DType.U8 or DType.Bool => Bytes.ToArray().Select(v => (long)v).ToArray(),
        DType.U16 => ToArray<ushort>().Select(v => (long)v).ToArray(),
        DType.U32 => ToArray<uint>().Select(v => (long)v).ToArray(),
        DType.U64 => ToArray<ulong>().Select(v => (long)v).ToArray(),
        _ => throw new InvalidOperationException($"{Elem.Name()} tensor is not an integer tensor"),
    };

    public static TensorData FromArray<T>(DType elem, long[] dims, T[] values) where T : unmanaged =>
        new MemoryTensorData(elem, dims, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static TensorData Int64(long[] dims, params long[] values) => FromArray(DType.I64, dims, values);
}

/// <summary>Tensor bytes held in managed memory (typically the buffer the protobuf parser produced).</summary>
public sealed class MemoryTensorData(DType elem, long[] dims, ReadOnlyMemory<byte> data) : TensorData(elem, dims)
{
    public override ReadOnlyMemory<byte> Memory { get; } = data;

    public override ReadOnlySpan<byte> Bytes => Memory.Span;
}

/// <summary>String tensor contents: one byte string per element, as ONNX stores them.</summary>
public sealed class StringTensorData(long[] dims, IReadOnlyList<byte[]> values) : TensorData(DType.String, dims)
{
    public IReadOnlyList<byte[]> Values { get; } = values;

    public override ReadOnlySpan<byte> Bytes => throw new InvalidOperationException("string tensors have no raw bytes");

    public override ReadOnlyMemory<byte> Memory => throw new InvalidOperationException("string tensors have no raw bytes");

    public IEnumerable<string> AsStrings => Values.Select(v => Encoding.UTF8.GetString(v));

    protected override string ComputeHash()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var v in Values)
        {
            sha.AppendData(BitConverter.GetBytes((long)v.Length));
            sha.AppendData(v);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset()[..8]);
    }
}

/// <summary>Tensor bytes inside a memory-mapped file (ONNX external data, or a .kir weights file).</summary>
public sealed class MappedTensorData(DType elem, long[] dims, MappedFile file, long offset) : TensorData(elem, dims)
{
    public MappedFile File { get; } = file;

    public long Offset { get; } = offset;

    public override ReadOnlySpan<byte> Bytes => File.Span(Offset, ByteLength);

    public override ReadOnlyMemory<byte> Memory => File.Memory(Offset, ByteLength);

    public override void ReleaseResident() => File.ReleaseResident(Offset, ByteLength);
}
