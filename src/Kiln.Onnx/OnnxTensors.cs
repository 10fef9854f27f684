using Kiln.Runtime;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx.Proto;

namespace Kiln.Onnx;

/// <summary>TensorProto ⇄ TensorData. Raw data is wrapped, not copied; external data is memory-mapped.</summary>
internal static class OnnxTensors
{
    public static TensorData Read(TensorProto t, ExternalDataResolver? external, string what)
    {
        var elem = OnnxElementCodes.FromCode(t.DataType)
            ?? throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedElementType,
                $"{what} has element type {OnnxElementCodes.CodeName(t.DataType)}, which Kiln does not support"));
        var dims = t.Dims.ToArray();
        if (dims.Any(d => d < 0)) throw SizeError(what, $"has a negative dimension [{string.Join(", ", dims)}]");
        long count;
        try { count = dims.Aggregate(1L, (a, b) => checked(a * b)); }
        catch (OverflowException) { throw SizeError(what, $"has dimensions [{string.Join(", ", dims)}] whose product overflows"); }
        if (t.Segment is not null) throw SizeError(what, "uses 'segment', which Kiln does not support");
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
        {
            if (external is null) throw new KilnException(new Diagnostic(DiagnosticCode.ExternalDataMissing, $"{what} uses external data, but the model was not read from a file"));
            if (elem == DType.String) throw SizeError(what, "is a string tensor with external data");
            return external.Resolve(t, elem, dims, elem.ByteCount(count), what);
        }
        if (elem == DType.String)
        {
            if (t.StringData.Count != count) throw SizeError(what, $"declares {count} strings but holds {t.StringData.Count}");
            return new StringTensorData(dims, t.StringData.Select(s => s.ToByteArray()).ToList());
        }
        var expected = elem.ByteCount(count);
        if (!t.RawData.IsEmpty || TypedCount(t) == 0)
        {
            if (t.RawData.Length != expected)
                throw SizeError(what, $"declares {ShapeText(dims)} {elem.Name()} ({expected} bytes) but holds {t.RawData.Length} bytes");
            return new MemoryTensorData(elem, dims, t.RawData.Memory);
        }
        return new MemoryTensorData(elem, dims, FromTypedFields(t, elem, count, what));
    }

    private static int TypedCount(TensorProto t) =>
        t.FloatData.Count + t.Int32Data.Count + t.Int64Data.Count + t.DoubleData.Count + t.Uint64Data.Count;

    private static string ShapeText(long[] dims) => "[" + string.Join(", ", dims) + "]";

    internal static KilnException SizeError(string what, string message) =>
        new(new Diagnostic(DiagnosticCode.TensorSizeMismatch, $"{what} {message}"));

    private static byte[] FromTypedFields(TensorProto t, DType elem, long count, string what)
    {
        void Check(int have, long want)
        {
            if (have != want) throw SizeError(what, $"declares {want} values for {elem.Name()} but holds {have}");
        }
        byte[] Bytes<T>(T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        switch (elem)
        {
            case DType.F32: Check(t.FloatData.Count, count); return Bytes(t.FloatData.ToArray());
            case DType.C64: Check(t.FloatData.Count, count * 2); return Bytes(t.FloatData.ToArray());
            case DType.F64: Check(t.DoubleData.Count, count); return Bytes(t.DoubleData.ToArray());
            case DType.C128: Check(t.DoubleData.Count, count * 2); return Bytes(t.DoubleData.ToArray());
            case DType.I64: Check(t.Int64Data.Count, count); return Bytes(t.Int64Data.ToArray());
            case DType.U64: Check(t.Uint64Data.Count, count); return Bytes(t.Uint64Data.ToArray());
            case DType.U32: Check(t.Uint64Data.Count, count); return Bytes(t.Uint64Data.Select(v => (uint)v).ToArray());
            case DType.I32: Check(t.Int32Data.Count, count); return Bytes(t.Int32Data.ToArray());
            case DType.I16: Check(t.Int32Data.Count, count); return Bytes(t.Int32Data.Select(v => (short)v).ToArray());
            case DType.U16 or DType.F16 or DType.BF16: Check(t.Int32Data.Count, count); return Bytes(t.Int32Data.Select(v => (ushort)v).ToArray());
            case DType.I8: Check(t.Int32Data.Count, count); return Bytes(t.Int32Data.Select(v => (sbyte)v).ToArray());
            case DType.U8 or DType.Bool: Check(t.Int32Data.Count, count); return t.Int32Data.Select(v => (byte)v).ToArray();
            case DType.I4 or DType.U4:
                // int32_data holds the packed bytes, two 4-bit values each.
                Check(t.Int32Data.Count, (count + 1) / 2);
                return t.Int32Data.Select(v => (byte)v).ToArray();
            default: throw SizeError(what, $"of type {elem.Name()} has no typed data field");
        }
    }

    /// <summary>Writes tensor data into a TensorProto (raw_data; strings as string_data), wrapping managed memory without a copy.</summary>
    public static TensorProto Write(string name, TensorData data, Func<TensorData, TensorProto, bool>? external = null)
    {
        var t = new TensorProto { Name = name, DataType = OnnxElementCodes.ToCode(data.Elem) };
        t.Dims.AddRange(data.Dims);
        if (data is StringTensorData s)
        {
            t.StringData.AddRange(s.Values.Select(ByteString.CopyFrom));
            return t;
        }
        if (external is not null && external(data, t)) return t;
        t.RawData = data is MemoryTensorData m ? UnsafeByteOperations.UnsafeWrap(m.Memory) : ByteString.CopyFrom(data.Bytes);
        return t;
    }
}

/// <summary>Finds and maps external data files, refusing locations outside the model's folder.</summary>
internal sealed class ExternalDataResolver(string modelDirectory, List<IDisposable> resources)
{
    private readonly Dictionary<string, MappedFile> _files = new(StringComparer.Ordinal);
    private readonly string _root = Path.GetFullPath(modelDirectory);

    public TensorData Resolve(TensorProto t, DType elem, long[] dims, long expected, string what)
    {
        var entries = t.ExternalData.ToDictionary(e => e.Key, e => e.Value);
        if (!entries.TryGetValue("location", out var location) || location.Length == 0)
            throw new KilnException(new Diagnostic(DiagnosticCode.ExternalDataMissing, $"{what} has external data without a 'location'"));
        if (Path.IsPathRooted(location) || location.Contains('\0'))
            throw new KilnException(new Diagnostic(DiagnosticCode.ExternalDataOutsideModel, $"{what}: external data location '{location}' is an absolute path; only files inside the model's folder are read"));
        var full = Path.GetFullPath(Path.Combine(_root, location));
        var rootWithSep = _root.EndsWith(Path.DirectorySeparatorChar) ? _root : _root + Path.DirectorySeparatorChar;
        if (!full.StartsWith(rootWithSep, StringComparison.Ordinal))
            throw new KilnException(new Diagnostic(DiagnosticCode.ExternalDataOutsideModel, $"{what}: external data location '{location}' points outside the model's folder"));
        long offset = 0, length = expected;
        if (entries.TryGetValue("offset", out var o) && !long.TryParse(o, out offset))
            throw OnnxTensors.SizeError(what, $"has a bad external data offset '{o}'");
        if (entries.TryGetValue("length", out var l) && !long.TryParse(l, out length))
            throw OnnxTensors.SizeError(what, $"has a bad external data length '{l}'");
        if (length != expected)
            throw OnnxTensors.SizeError(what, $"declares {expected} bytes of {elem.Name()} [{string.Join(", ", dims)}] but its external data length is {length}");
        if (!_files.TryGetValue(full, out var file))
        {
            if (!File.Exists(full))
                throw new KilnException(new Diagnostic(DiagnosticCode.ExternalDataMissing, $"{what}: external data file '{location}' does not exist (looked for {full})"));
            file = new MappedFile(full);
            resources.Add(file);
            _files[full] = file;
        }
        if (offset < 0 || offset + length > file.Length)
            throw OnnxTensors.SizeError(what, $"reads bytes {offset}..{offset + length} of '{location}', which has {file.Length} bytes");
        return new MappedTensorData(elem, dims, file, offset);
    }
}
