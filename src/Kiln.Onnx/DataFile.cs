using Google.Protobuf;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx.Proto;

namespace Kiln.Onnx;

/// <summary>A value read from a backend-test data file: a tensor, a sequence or an optional.</summary>
public abstract record DataValue(string Name);

public sealed record TensorValue(string Name, TensorData Data) : DataValue(Name);

public sealed record SequenceValue(string Name, IReadOnlyList<DataValue> Items) : DataValue(Name);

/// <summary>An optional: <paramref name="Value"/> is null when it holds nothing.</summary>
public sealed record OptionalValue(string Name, DataValue? Value) : DataValue(Name);

/// <summary>
/// Reads and writes the serialized values of ONNX backend test data sets (<c>input_N.pb</c>, <c>output_N.pb</c>):
/// a TensorProto, or a SequenceProto / OptionalProto when the graph's type says so.
/// </summary>
public static class DataFile
{
    /// <summary>Reads <paramref name="path"/> as the kind of value <paramref name="expected"/> describes (a tensor when null).</summary>
    public static DataValue Read(string path, IrType? expected = null)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KilnException(new Diagnostic(DiagnosticCode.FileNotReadable, $"cannot read data file: {e.Message}", path));
        }
        try
        {
            return expected switch
            {
                SequenceType => FromSequence(SequenceProto.Parser.ParseFrom(bytes), path),
                OptionalType => FromOptional(OptionalProto.Parser.ParseFrom(bytes), path),
                _ => FromTensor(TensorProto.Parser.ParseFrom(bytes), path),
            };
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new KilnException(new Diagnostic(DiagnosticCode.MalformedProtobuf, $"not a serialized {(expected is SequenceType ? "SequenceProto" : expected is OptionalType ? "OptionalProto" : "TensorProto")}: {e.Message}", path));
        }
    }

    private static TensorValue FromTensor(TensorProto t, string path)
    {
        if (t.DataType == 0) throw new KilnException(new Diagnostic(DiagnosticCode.MalformedProtobuf, "the tensor has no element type", path));
        return new TensorValue(t.Name, OnnxTensors.Read(t, null, Path.GetFileName(path)));
    }

    private static SequenceValue FromSequence(SequenceProto s, string path)
    {
        var items = new List<DataValue>();
        items.AddRange(s.TensorValues.Select(t => FromTensor(t, path)));
        items.AddRange(s.SequenceValues.Select(q => FromSequence(q, path)));
        items.AddRange(s.OptionalValues.Select(o => FromOptional(o, path)));
        if (s.MapValues.Count > 0 || s.SparseTensorValues.Count > 0)
            throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedElementType, "sequences of maps or sparse tensors are not supported", path));
        return new SequenceValue(s.Name, items);
    }

    private static OptionalValue FromOptional(OptionalProto o, string path) => o.ElemType switch
    {
        0 => new OptionalValue(o.Name, null),
        1 => new OptionalValue(o.Name, o.TensorValue is null ? null : FromTensor(o.TensorValue, path)),
        3 => new OptionalValue(o.Name, o.SequenceValue is null ? null : FromSequence(o.SequenceValue, path)),
        5 => new OptionalValue(o.Name, o.OptionalValue is null ? null : FromOptional(o.OptionalValue, path)),
        _ => throw new KilnException(new Diagnostic(DiagnosticCode.UnsupportedElementType, $"optional of element kind {o.ElemType} is not supported", path)),
    };

    /// <summary>Writes a tensor as a serialized TensorProto (raw data).</summary>
    public static void WriteTensor(string path, string name, TensorData data) =>
        File.WriteAllBytes(path, OnnxTensors.Write(name, data).ToByteArray());
}
