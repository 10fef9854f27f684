using Kiln.Runtime;
using System.Text;
using Kiln.Ir.Diagnostics;

namespace Kiln.Ir;

/// <summary>
/// The weights file written beside a .kir dump: the tensors its <c>weight #hash</c> lines refer to, keyed by
/// content hash. Layout: "KILNWTS1", entry count (u32), entries (hash, element type, dims, offset, length), then
/// data, each tensor 64-byte aligned. Reading maps the file; tensors are views into it.
/// </summary>
public sealed class WeightFile : IWeightSource, IDisposable
{
    private static readonly byte[] Magic = "KILNWTS1"u8.ToArray();
    private readonly MappedFile _file;
    private readonly Dictionary<string, TensorData> _byHash = [];

    private WeightFile(MappedFile file) => _file = file;

    /// <summary>The conventional weights path for a dump: <c>model.kir</c> → <c>model.kir.weights</c>.</summary>
    public static string PathFor(string kirPath) => kirPath + ".weights";

    public static void Write(string path, IEnumerable<TensorData> tensors)
    {
        var unique = new List<TensorData>();
        var seen = new HashSet<string>();
        foreach (var t in tensors)
            if (seen.Add(t.ContentHash)) unique.Add(t);
        // The header's size does not depend on the offsets, so write it once to measure, then again with them.
        var offsets = new long[unique.Count];
        var pos = Align(Header(unique, offsets).Length);
        for (var i = 0; i < unique.Count; i++)
        {
            offsets[i] = pos;
            pos = Align(pos + unique[i].ByteLength);
        }
        var headerBytes = Header(unique, offsets);
        using var output = new FileStream(path, FileMode.Create, FileAccess.Write);
        output.Write(headerBytes);
        for (var i = 0; i < unique.Count; i++)
        {
            output.Write(new byte[(int)(offsets[i] - output.Position)]);
            output.Write(unique[i].Bytes);
        }
    }

    private static byte[] Header(List<TensorData> tensors, long[] offsets)
    {
        using var header = new MemoryStream();
        using var w = new BinaryWriter(header, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write((uint)tensors.Count);
        for (var i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            w.Write(t.ContentHash);
            w.Write((byte)t.Elem);
            w.Write((byte)t.Dims.Length);
            foreach (var d in t.Dims) w.Write(d);
            w.Write(offsets[i]);
            w.Write(t.ByteLength);
        }
        w.Flush();
        return header.ToArray();
    }

    private static long Align(long v) => (v + 63) / 64 * 64;

    public static WeightFile Open(string path)
    {
        if (!File.Exists(path))
            throw new KilnException(DiagnosticCode.KirWeightMismatch, $"weights file '{path}' does not exist (a .kir dump keeps its large constants there)", path);
        var mapped = new MappedFile(path);
        var wf = new WeightFile(mapped);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            using var r = new BinaryReader(stream);
            if (!r.ReadBytes(8).AsSpan().SequenceEqual(Magic)) throw new InvalidDataException("bad magic");
            var count = r.ReadUInt32();
            for (var i = 0; i < count; i++)
            {
                var hash = r.ReadString();
                var elem = (DType)r.ReadByte();
                var rank = r.ReadByte();
                var dims = new long[rank];
                for (var k = 0; k < rank; k++) dims[k] = r.ReadInt64();
                var offset = r.ReadInt64();
                var length = r.ReadInt64();
                if (!Enum.IsDefined(elem) || offset < 0 || offset + length > mapped.Length || elem.ByteCount(dims.Aggregate(1L, (a, b) => a * b)) != length)
                    throw new InvalidDataException($"entry {i} is inconsistent");
                wf._byHash[hash] = new MappedTensorData(elem, dims, mapped, offset);
            }
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
        {
            wf.Dispose();
            throw new KilnException(DiagnosticCode.KirWeightMismatch, $"'{path}' is not a valid Kiln weights file: {e.Message}", path);
        }
        return wf;
    }

    public TensorData? Find(string hash, TensorType type)
    {
        if (!_byHash.TryGetValue(hash, out var t)) return null;
        // The hash names the content: recompute it so a stale or edited weights file is caught.
        return t.ContentHash == hash ? t : throw new KilnException(DiagnosticCode.KirWeightMismatch, $"weight #{hash} in '{_file.Path}' has different contents (hash {t.ContentHash})", _file.Path);
    }

    public void Dispose() => _file.Dispose();

    /// <summary>Hands the mapped file to a model so it lives as long as the model's constants.</summary>
    public IDisposable Handle => _file;
}
