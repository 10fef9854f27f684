using Kiln.Ir;
using Kiln.Ir.Diagnostics;

namespace Kiln.Onnx;

/// <summary>
/// Reads calibration inputs: a folder of ONNX-test-style sets (<c>input_N.pb</c> files, directly in the folder or in
/// <c>test_data_set_*</c> / <c>*_set_*</c> subfolders: one sample per set, tensors bound by name, else by position), or a
/// token file (one TensorProto of int64 [rows, tokens], as <c>eval_tokens.pb</c>) fed to the model's int64 token input
/// in samples of <paramref name="rowsPerSample"/> rows.
/// </summary>
public static class CalibrationFiles
{
    public static IReadOnlyList<IReadOnlyDictionary<string, TensorData>> Load(string path, Graph graph, int rowsPerSample = 8)
    {
        if (File.Exists(path))
        {
            var tokens = DataFile.Read(path) is TensorValue { Data: { Elem: DType.I64, Dims.Length: 2 } t } ? t
                : throw Bad(path, "a token file holds one int64 [rows, tokens] tensor");
            var input = graph.Inputs.FirstOrDefault(i => i.Name == "input_ids" && i.Data is null)
                ?? graph.Inputs.FirstOrDefault(i => i.TensorType?.Elem == DType.I64 && i.Data is null)
                ?? throw Bad(path, "the model has no int64 token input to feed");
            var rows = (int)t.Dims[0];
            var length = (int)t.Dims[1];
            var all = t.ToArray<long>();
            var samples = new List<IReadOnlyDictionary<string, TensorData>>();
            for (var r = 0; r < rows; r += rowsPerSample)
            {
                var n = Math.Min(rowsPerSample, rows - r);
                samples.Add(new Dictionary<string, TensorData> { [input.Name] = TensorData.FromArray(DType.I64, [n, length], all.AsSpan(r * length, n * length).ToArray()) });
            }
            return samples;
        }
        if (!Directory.Exists(path)) throw new KilnException(new Diagnostic(DiagnosticCode.FileNotReadable, "calibration data not found (a folder of input_N.pb sets, or a token file)", path));
        var sets = Directory.EnumerateFiles(path, "input_*.pb").Any() ? [path]
            : Directory.EnumerateDirectories(path).Where(d => Directory.EnumerateFiles(d, "input_*.pb").Any()).Order(StringComparer.Ordinal).ToList();
        if (sets.Count == 0) throw Bad(path, "the folder holds no input_N.pb files, directly or in set folders");
        var inputs = graph.Inputs.Where(i => i.Data is null).ToList();
        var result = new List<IReadOnlyDictionary<string, TensorData>>();
        foreach (var set in sets)
        {
            var feeds = new Dictionary<string, TensorData>();
            var files = Directory.EnumerateFiles(set, "input_*.pb")
                .Select(f => (File: f, Index: int.TryParse(Path.GetFileNameWithoutExtension(f)["input_".Length..], out var k) ? k : -1))
                .Where(f => f.Index >= 0).OrderBy(f => f.Index);
            foreach (var (file, index) in files)
            {
                if (DataFile.Read(file) is not TensorValue tv) throw Bad(file, "calibration inputs are tensors");
                var name = tv.Name.Length > 0 && inputs.Any(i => i.Name == tv.Name) ? tv.Name
                    : index < inputs.Count ? inputs[index].Name : throw Bad(file, $"names no input of the model, and the model has only {inputs.Count} inputs");
                feeds[name] = tv.Data;
            }
            result.Add(feeds);
        }
        return result;
    }

    private static KilnException Bad(string path, string what) => new(new Diagnostic(DiagnosticCode.CalibrationData, what, path));
}
