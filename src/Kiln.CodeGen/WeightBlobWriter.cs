using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Kiln.Runtime.Weights;

namespace Kiln.CodeGen;

/// <summary>Writes the <c>.kiln</c> weight blob <see cref="WeightBlob"/> reads: same tensors in, same bytes out.</summary>
public static class WeightBlobWriter
{
    public static long Write(string path, IReadOnlyList<BlobTensor> tensors, string modelHash)
    {
        var table = new MemoryStream();
        var offsets = new long[tensors.Count];
        long data = 0;
        var b = new byte[8];
        for (var i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            offsets[i] = data;
            data = Align(data + t.Data.ByteLength);
            var name = Encoding.UTF8.GetBytes(t.Name);
            if (name.Length > ushort.MaxValue) throw new ArgumentException($"tensor name '{t.Name[..64]}…' is too long for a blob");
            BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)name.Length);
            table.Write(b, 0, 2);
            table.Write(name);
            table.WriteByte((byte)(int)t.Data.Elem);
            table.WriteByte((byte)WeightFormat.Dense);
            table.WriteByte(checked((byte)t.Data.Dims.Length));
            foreach (var d in t.Data.Dims) { BinaryPrimitives.WriteInt64LittleEndian(b, d); table.Write(b); }
            BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)offsets[i]); table.Write(b);
            BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)t.Data.ByteLength); table.Write(b);
        }
        var dataOffset = Align(WeightBlob.HeaderSize + table.Length);
        var header = new byte[WeightBlob.HeaderSize];
        WeightBlob.Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), WeightBlob.FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), (uint)tensors.Count);
        Convert.FromHexString(modelHash).CopyTo(header.AsSpan(16, 32));
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(48), (ulong)table.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(56), (ulong)dataOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(64), (ulong)data);

        // The payload hash covers everything after the header: table, padding and data, in file order.
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var tmp = path + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            f.Write(header);
            void Put(ReadOnlySpan<byte> bytes)
            {
                f.Write(bytes);
                sha.AppendData(bytes);
            }
            var zeros = new byte[WeightBlob.Alignment];
            Put(table.GetBuffer().AsSpan(0, (int)table.Length));
            Put(zeros.AsSpan(0, (int)(dataOffset - WeightBlob.HeaderSize - table.Length)));
            long at = 0;
            for (var i = 0; i < tensors.Count; i++)
            {
                var bytes = tensors[i].Data.Bytes;
                Put(bytes);
                at += bytes.Length;
                var next = i + 1 < tensors.Count ? offsets[i + 1] : data;
                Put(zeros.AsSpan(0, (int)(next - at)));
                at = next;
            }
            f.Position = 72;
            f.Write(sha.GetHashAndReset());
        }
        File.Move(tmp, path, overwrite: true);
        return dataOffset + data;
    }

    private static long Align(long x) => (x + WeightBlob.Alignment - 1) / WeightBlob.Alignment * WeightBlob.Alignment;
}
