using System.Runtime.InteropServices;
using Kiln.Ir;
using Kiln.Onnx;
using Kiln.Onnx.Proto;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.TestSupport;

/// <summary>Runs models with ONNX Runtime (the test oracle, never Kiln's engine) and compares outputs with expected tensors.</summary>
public static class OrtRunner
{
    /// <summary>Reads input_N.pb / output_N.pb of a data set in N order; null when a file is not a tensor (sequence / optional data).</summary>
    public static (List<TensorData> Inputs, List<TensorData> Outputs)? ReadDataSet(string dir)
    {
        List<TensorData>? Read(string prefix)
        {
            var list = new List<TensorData>();
            foreach (var f in Directory.EnumerateFiles(dir, prefix + "_*.pb").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[(prefix.Length + 1)..])))
            {
                try
                {
                    var proto = TensorProto.Parser.ParseFrom(File.ReadAllBytes(f));
                    if (proto.DataType == 0) return null;
                    list.Add(OnnxTensors.Read(proto, null, Path.GetFileName(f)));
                }
                catch (Exception e) when (e is Google.Protobuf.InvalidProtocolBufferException or Ir.Diagnostics.KilnException)
                {
                    return null;
                }
            }
            return list;
        }
        var inputs = Read("input");
        var outputs = Read("output");
        return inputs is null || outputs is null ? null : (inputs, outputs);
    }

    private static TensorElementType OrtType(DType t) => t switch
    {
        DType.F32 => TensorElementType.Float, DType.F64 => TensorElementType.Double, DType.F16 => TensorElementType.Float16,
        DType.BF16 => TensorElementType.BFloat16, DType.I64 => TensorElementType.Int64, DType.I32 => TensorElementType.Int32,
        DType.I16 => TensorElementType.Int16, DType.I8 => TensorElementType.Int8, DType.U8 => TensorElementType.UInt8,
        DType.U16 => TensorElementType.UInt16, DType.U32 => TensorElementType.UInt32, DType.U64 => TensorElementType.UInt64,
        DType.Bool => TensorElementType.Bool, DType.String => TensorElementType.String,
        _ => throw new NotSupportedException($"no ONNX Runtime element type for {t.Name()} in tests"),
    };

    /// <summary>
    /// Runs an IR model of standard ONNX ops in ONNX Runtime (exported first) on named inputs; returns each f32 output
    /// by name. The oracle for tests that compare Kiln's f32 results.
    /// </summary>
    public static Dictionary<string, float[]> RunModel(Model model, IReadOnlyDictionary<string, object?> inputs)
    {
        var bytes = OnnxExporter.ExportToBytes(model);
        var data = model.Graph.Inputs.Select(v => Kiln.Evaluator.RuntimeTypes.ToTensorData((Kiln.Runtime.Tensor)inputs[v.Name]!)).ToList();
        var names = model.Graph.Outputs.Select(o => o.Value.Name).ToList();
        return names.Zip(Run(bytes, data, names)).ToDictionary(p => p.First, p => p.Second.ToArray<float>());
    }

    /// <summary>Runs <paramref name="modelBytes"/> on the inputs, bound by graph input order; returns outputs as tensor data.</summary>
    public static List<TensorData> Run(byte[] modelBytes, IReadOnlyList<TensorData> inputs, IReadOnlyList<string>? outputNames = null)
    {
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(modelBytes, options);
        var names = session.InputMetadata.Keys.ToList();
        var values = new List<OrtValue>();
        try
        {
            for (var i = 0; i < inputs.Count && i < names.Count; i++)
            {
                var input = inputs[i];
                // The ONNX test data stores bfloat16 as uint16: relabel when the model wants bfloat16.
                if (input.Elem == DType.U16 && session.InputMetadata[names[i]].ElementDataType == TensorElementType.BFloat16)
                    input = new MemoryTensorData(DType.BF16, input.Dims, input.Bytes.ToArray());
                values.Add(ToOrt(input));
            }
            var outNames = outputNames ?? session.OutputMetadata.Keys.ToList();
            using var results = session.Run(new RunOptions(), names.Take(values.Count).ToList(), values, outNames);
            return results.Select(FromOrt).ToList();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public static OrtValue ToOrt(TensorData t)
    {
        if (t is StringTensorData s)
        {
            var v = OrtValue.CreateTensorWithEmptyStrings(OrtAllocator.DefaultInstance, t.Dims);
            var strings = s.AsStrings.ToArray();
            for (var i = 0; i < strings.Length; i++) v.StringTensorSetElementAt(strings[i].AsSpan(), i);
            return v;
        }
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, OrtType(t.Elem), t.Dims);
        t.Bytes.CopyTo(value.GetTensorMutableRawData());
        return value;
    }

    public static TensorData FromOrt(OrtValue v)
    {
        var info = v.GetTensorTypeAndShape();
        var shape = info.Shape;
        if (info.ElementDataType == TensorElementType.String)
            return new StringTensorData(shape, v.GetStringTensorAsArray().Select(x => System.Text.Encoding.UTF8.GetBytes(x)).ToList());
        var elem = info.ElementDataType switch
        {
            TensorElementType.Float => DType.F32, TensorElementType.Double => DType.F64, TensorElementType.Float16 => DType.F16,
            TensorElementType.BFloat16 => DType.BF16, TensorElementType.Int64 => DType.I64, TensorElementType.Int32 => DType.I32,
            TensorElementType.Int16 => DType.I16, TensorElementType.Int8 => DType.I8, TensorElementType.UInt8 => DType.U8,
            TensorElementType.UInt16 => DType.U16, TensorElementType.UInt32 => DType.U32, TensorElementType.UInt64 => DType.U64,
            TensorElementType.Bool => DType.Bool,
            var other => throw new NotSupportedException($"ONNX Runtime output type {other}"),
        };
        return new MemoryTensorData(elem, shape, v.GetTensorDataAsSpan<byte>().ToArray());
    }

    /// <summary>Null when <paramref name="actual"/> matches <paramref name="expected"/> (|a−e| ≤ atol + rtol·|e| for floats, exact otherwise); else why not.</summary>
    public static string? Compare(TensorData actual, TensorData expected, double atol, double rtol)
    {
        if (!actual.Dims.SequenceEqual(expected.Dims))
            return $"shape [{string.Join(", ", actual.Dims)}] vs expected [{string.Join(", ", expected.Dims)}]";
        if (actual.Elem == DType.BF16 && expected.Elem == DType.U16)
            expected = new MemoryTensorData(DType.BF16, expected.Dims, expected.Bytes.ToArray());
        if (actual.Elem != expected.Elem) return $"type {actual.Elem.Name()} vs expected {expected.Elem.Name()}";
        if (actual is StringTensorData sa && expected is StringTensorData se)
            return sa.AsStrings.SequenceEqual(se.AsStrings) ? null : "strings differ";
        if (!actual.Elem.IsFloat()) return actual.Bytes.SequenceEqual(expected.Bytes) ? null : "values differ";
        var a = ToDoubles(actual);
        var e = ToDoubles(expected);
        for (var i = 0; i < a.Length; i++)
        {
            if (double.IsNaN(e[i]) && double.IsNaN(a[i])) continue;
            if (double.IsInfinity(e[i]) && a[i] == e[i]) continue;
            if (!(Math.Abs(a[i] - e[i]) <= atol + rtol * Math.Abs(e[i])))
                return $"element {i}: {a[i]} vs expected {e[i]}";
        }
        return null;
    }

    public static double[] ToDoubles(TensorData t) => t.Elem switch
    {
        DType.F32 => MemoryMarshal.Cast<byte, float>(t.Bytes).ToArray().Select(x => (double)x).ToArray(),
        DType.F64 => MemoryMarshal.Cast<byte, double>(t.Bytes).ToArray(),
        DType.F16 => MemoryMarshal.Cast<byte, Half>(t.Bytes).ToArray().Select(x => (double)x).ToArray(),
        DType.BF16 => MemoryMarshal.Cast<byte, ushort>(t.Bytes).ToArray().Select(x => (double)BitConverter.Int32BitsToSingle(x << 16)).ToArray(),
        _ => throw new NotSupportedException(),
    };
}
