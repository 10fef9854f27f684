using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Weights;

namespace Kiln.CodeGen;

/// <summary>Writes the <c>.kiln</c> weight blob <see cref="WeightBlob"/> reads (format 2): same tensors in, same bytes out.</summary>
public static class WeightBlobWriter
{
    /// <summary>Writes the blob; returns its length. Runs of zeros in the data are skipped, not written, so the file is sparse where the weights are.</summary>
    public static long Write(string path, IReadOnlyList<BlobTensor> tensors, string modelHash, int chunkSize = WeightBlob.DefaultChunkSize)
    {
        var table = new MemoryStream();
        var offsets = new long[tensors.Count];
        long data = 0;
        var b = new byte[8];
        for (var i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            // One tensor is one view in the runtime (a span): larger ones cannot be read by its kernels.
            if (t.Data.ByteLength > int.MaxValue)
                throw new KilnException(DiagnosticCode.CodeGenFailed, $"weight '{t.Name}' holds {t.Data.ByteLength:N0} bytes; one tensor can hold at most {int.MaxValue:N0} (split it, or quantize it)");
            offsets[i] = data;
            data = Align(data + t.Data.ByteLength);
            var name = Encoding.UTF8.GetBytes(t.Name);
            if (name.Length > ushort.MaxValue) throw new KilnException(DiagnosticCode.CodeGenFailed, $"weight name '{t.Name[..64]}…' is too long for a blob");
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
        var chunks = checked((uint)((data + chunkSize - 1) / chunkSize));
        var dataOffset = Align(WeightBlob.HeaderSize + table.Length + 8L * chunks);
        var hashes = new byte[8 * chunks];
        var tmp = path + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            // The data first (the chunk hashes before it are known only after), then table, hashes and header.
            f.Position = dataOffset;
            var chunk = new XxHash3();
            long inChunk = 0, chunkIndex = 0;
            void Put(ReadOnlySpan<byte> bytes)
            {
                while (bytes.Length > 0)
                {
                    var n = (int)Math.Min(bytes.Length, chunkSize - inChunk);
                    var piece = bytes[..n];
                    chunk.Append(piece);
                    if (piece.ContainsAnyExcept((byte)0)) f.Write(piece);
                    else f.Seek(n, SeekOrigin.Current);
                    inChunk += n;
                    bytes = bytes[n..];
                    if (inChunk == chunkSize) EndChunk();
                }
            }
            void EndChunk()
            {
                BinaryPrimitives.WriteUInt64LittleEndian(hashes.AsSpan(8 * (int)chunkIndex++), chunk.GetCurrentHashAsUInt64());
                chunk.Reset();
                inChunk = 0;
            }
            var zeros = new byte[WeightBlob.Alignment];
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
            if (inChunk > 0) EndChunk();
            f.SetLength(dataOffset + data);

            var header = new byte[WeightBlob.HeaderSize];
            WeightBlob.Magic.CopyTo(header);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), WeightBlob.FormatVersion);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), (uint)tensors.Count);
            Convert.FromHexString(modelHash).CopyTo(header.AsSpan(16, 32));
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(48), (ulong)table.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(56), (ulong)dataOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(64), (ulong)data);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(72), (uint)chunkSize);
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(76), chunks);
            var tableBytes = table.GetBuffer().AsSpan(0, (int)table.Length);
            var index = new XxHash128();
            index.Append(header.AsSpan(0, WeightBlob.IndexHashOffset));
            index.Append(header.AsSpan(WeightBlob.ReservedOffset));
            index.Append(tableBytes);
            index.Append(hashes);
            index.GetCurrentHash(header.AsSpan(WeightBlob.IndexHashOffset, 16));
            f.Position = 0;
            f.Write(header);
            f.Write(tableBytes);
            f.Write(hashes);
            // The gap up to the data stays zero (the file was extended past it).
        }
        File.Move(tmp, path, overwrite: true);
        return dataOffset + data;
    }

    private static long Align(long x) => (x + WeightBlob.Alignment - 1) / WeightBlob.Alignment * WeightBlob.Alignment;
}
