using System.Globalization;
using Kiln.Evaluator;
using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Onnx;
using Kiln.Runtime;
using OnnxOptional = Kiln.Onnx.OptionalValue;
using OnnxSequence = Kiln.Onnx.SequenceValue;

namespace Kiln.Compiler;

/// <summary>How one output compared with its expected value.</summary>
public sealed record OutputCheck(string Name, bool Ok, double MaxAbs, double MaxRel, string? Problem);

/// <summary>
/// Runs ONNX backend-test data sets (<c>input_N.pb</c> → <c>output_N.pb</c>) through the evaluator and compares:
/// floats within atol + rtol·|expected| (NaN matches NaN), integers, bools and strings exactly, shapes exactly.
/// </summary>
public static class DataSets
{
    public const double DefaultAtol = 1e-7;
    public const double DefaultRtol = 1e-3;

    /// <summary>The data-set folders under <paramref name="dir"/>, or <paramref name="dir"/> itself when it holds input files.</summary>
    public static List<string> Find(string dir)
    {
        if (!Directory.Exists(dir)) throw new KilnException(DiagnosticCode.FileNotReadable, "data folder does not exist", dir);
        if (Directory.EnumerateFiles(dir, "input_*.pb").Any()) return [dir];
        var sets = Directory.EnumerateDirectories(dir).Where(d => Path.GetFileName(d).Contains("test_data_set_", StringComparison.Ordinal))
            .OrderBy(d => d, StringComparer.Ordinal).ToList();
        if (sets.Count == 0) throw new KilnException(DiagnosticCode.FileNotReadable, "no input_N.pb files and no test_data_set_* folders here", dir);
        return sets;
    }

    private static IEnumerable<string> Numbered(string dir, string prefix) =>
        Directory.EnumerateFiles(dir, prefix + "_*.pb")
            .Select(f => (f, n: int.TryParse(Path.GetFileNameWithoutExtension(f)[(prefix.Length + 1)..], out var n) ? n : -1))
            .Where(x => x.n >= 0).OrderBy(x => x.n).Select(x => x.f);

    /// <summary>Reads a data set's inputs, bound to graph inputs by name when the file names one, else by position.</summary>
    public static Dictionary<string, object?> ReadInputs(Graph graph, string dir)
    {
        var inputs = new Dictionary<string, object?>(StringComparer.Ordinal);
        var files = Numbered(dir, "input").ToList();
        for (var i = 0; i < files.Count; i++)
        {
            // The file's own name decides the binding when it names a graph input; otherwise its position does.
            var byPosition = i < graph.Inputs.Count ? graph.Inputs[i] : null;
            var probe = DataFile.Read(files[i], byPosition?.Type);
            var target = graph.Inputs.FirstOrDefault(v => v.Name == probe.Name && probe.Name.Length > 0) ?? byPosition
                ?? throw new KilnException(DiagnosticCode.InputMismatch, $"{Path.GetFileName(files[i])}: the graph has only {graph.Inputs.Count} inputs", dir);
            var value = target == byPosition ? probe : DataFile.Read(files[i], target.Type);
            inputs[target.Name] = Relabel(ToRuntime(value), target.Type);
        }
        return inputs;
    }

    public static List<DataValue> ReadOutputs(Graph graph, string dir) =>
        Numbered(dir, "output").Select((f, i) => DataFile.Read(f, i < graph.Outputs.Count ? graph.Outputs[i].DeclaredType : null)).ToList();

    /// <summary>The backend tests store bfloat16 data as uint16 tensors; read them as the bf16 the graph declares.</summary>
    public static object? Relabel(object? v, IrType declared) =>
        v is Tensor { Type: DType.U16 } t && declared is TensorType { Elem: DType.BF16 } ? Tensor.Wrap(DType.BF16, t.Shape, t.Memory) : v;

    public static object? ToRuntime(DataValue v) => v switch
    {
        TensorValue t => t.Data.ToTensor(),
        OnnxSequence s => new TensorSequence(s.Items.Select(i => (Tensor)ToRuntime(i)!).ToList(),
            s.Items.Count > 0 && s.Items[0] is TensorValue tv ? tv.Data.Elem.ToRuntime() : null),
        OnnxOptional o => new Runtime.OptionalValue(o.Value is null ? null : ToRuntime(o.Value)),
        _ => throw new InvalidOperationException(v.GetType().Name),
    };

    /// <summary>Runs one data set; returns a check per expected output.</summary>
    public static List<OutputCheck> Check(Interpreter interpreter, Graph graph, string dir, double atol, double rtol) =>
        Check(new InterpreterRunner(interpreter), graph, dir, atol, rtol);

    /// <summary>Runs one data set on any engine; returns a check per expected output.</summary>
    public static List<OutputCheck> Check(IModelRunner runner, Graph graph, string dir, double atol, double rtol)
    {
        var inputs = ReadInputs(graph, dir);
        var expected = ReadOutputs(graph, dir);
        var outputs = runner.Run(inputs);
        var checks = new List<OutputCheck>();
        for (var i = 0; i < expected.Count; i++)
        {
            var name = i < graph.Outputs.Count ? graph.Outputs[i].Name : $"#{i}";
            var want = expected[i];
            if (want.Name.Length > 0 && outputs.ContainsKey(want.Name)) name = want.Name;
            if (!outputs.TryGetValue(name, out var got))
            {
                checks.Add(new OutputCheck(name, false, 0, 0, "the graph has no such output"));
                continue;
            }
            checks.Add(Compare(name, got, want, atol, rtol));
        }
        return checks;
    }

    public static OutputCheck Compare(string name, object? got, DataValue want, double atol, double rtol)
    {
        switch (want)
        {
            case TensorValue tv:
                if (got is not Tensor t) return new(name, false, 0, 0, $"expected a tensor, got {Values.Describe(got)}");
                var wt = tv.Data.ToTensor();
                if (wt.Type == DType.U16 && t.Type == DType.BF16) wt = Tensor.Wrap(DType.BF16, wt.Shape, wt.Memory);
                return CompareTensor(name, t, wt, atol, rtol);
            case OnnxSequence sv:
                {
                    if (got is not TensorSequence s) return new(name, false, 0, 0, $"expected a sequence, got {Values.Describe(got)}");
                    if (s.Items.Count != sv.Items.Count) return new(name, false, 0, 0, $"sequence has {s.Items.Count} items, expected {sv.Items.Count}");
                    double ma = 0, mr = 0;
                    for (var i = 0; i < s.Items.Count; i++)
                    {
                        var c = Compare($"{name}[{i}]", s.Items[i], sv.Items[i], atol, rtol);
                        if (!c.Ok) return c with { Name = name };
                        ma = Math.Max(ma, c.MaxAbs);
                        mr = Math.Max(mr, c.MaxRel);
                    }
                    return new(name, true, ma, mr, null);
                }
            case OnnxOptional ov:
                {
                    var inner = got is Runtime.OptionalValue o ? o.Value : got;
                    if (ov.Value is null) return inner is null ? new(name, true, 0, 0, null) : new(name, false, 0, 0, "expected an empty optional");
                    if (inner is null) return new(name, false, 0, 0, "got an empty optional");
                    return Compare(name, inner, ov.Value, atol, rtol);
                }
        }
        return new(name, false, 0, 0, "unknown expected value");
    }

    private static OutputCheck CompareTensor(string name, Tensor got, Tensor want, double atol, double rtol)
    {
        var inv = CultureInfo.InvariantCulture;
        if (got.Type != want.Type) return new(name, false, 0, 0, $"element type {got.Type.Name()}, expected {want.Type.Name()}");
        if (!got.Shape.SequenceEqual(want.Shape))
            return new(name, false, 0, 0, $"shape [{string.Join(", ", got.Shape)}], expected [{string.Join(", ", want.Shape)}]");
        if (got.Type == DType.String)
        {
            for (var i = 0; i < got.Length; i++)
                if (got.Strings[i] != want.Strings[i])
                    return new(name, false, 0, 0, $"string mismatch at flat index {i}: got \"{got.Strings[i]}\", expected \"{want.Strings[i]}\"");
            return new(name, true, 0, 0, null);
        }
        if (!got.Type.IsFloat())
        {
            var bad = 0;
            var first = -1L;
            double maxAbs = 0;
            for (long i = 0; i < got.Length; i++)
            {
                var a = got.GetLong(i);
                var e = want.GetLong(i);
                if (a == e) continue;
                bad++;
                if (first < 0) first = i;
                maxAbs = Math.Max(maxAbs, Math.Abs((double)a - e));
            }
            return bad == 0 ? new(name, true, 0, 0, null)
                : new(name, false, maxAbs, 0, $"{bad}/{got.Length} {got.Type.Name()} elements differ; first at flat index {first}: got {got.GetLong(first)}, expected {want.GetLong(first)}");
        }
        {
            var bad = 0;
            var first = -1L;
            double maxAbs = 0, maxRel = 0;
            for (long i = 0; i < got.Length; i++)
            {
                var a = got.GetDouble(i);
                var e = want.GetDouble(i);
                if (double.IsNaN(a) && double.IsNaN(e)) continue;
                if (a == e) continue;
                var diff = Math.Abs(a - e);
                if (double.IsNaN(diff)) diff = double.PositiveInfinity;
                maxAbs = Math.Max(maxAbs, diff);
                if (e != 0) maxRel = Math.Max(maxRel, diff / Math.Abs(e));
                if (diff <= atol + rtol * Math.Abs(e)) continue;
                bad++;
                if (first < 0) first = i;
            }
            if (bad == 0) return new(name, true, maxAbs, maxRel, null);
            return new(name, false, maxAbs, maxRel,
                $"{bad}/{got.Length} {got.Type.Name()} elements outside rtol={rtol.ToString(inv)},atol={atol.ToString(inv)}; max abs diff {maxAbs.ToString("G4", inv)}, max rel diff {maxRel.ToString("G4", inv)}; first at flat index {first}: got {got.GetDouble(first).ToString("R", inv)}, expected {want.GetDouble(first).ToString("R", inv)}");
        }
    }
}
