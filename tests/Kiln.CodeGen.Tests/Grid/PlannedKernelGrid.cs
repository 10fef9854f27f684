using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Kiln.CodeGen.Tests.Grid;

/// <summary>
/// One grid case: a node of <paramref name="Op"/> on inputs (<c>x: f32[2, 3], b: f32[3]</c>) and constants
/// (<c>w: f32[3] = [1, 2, 3]</c>), written as .kir with <c>%name</c> for inputs and <c>@name</c> for constants.
/// <paramref name="Positive"/>: f32 inputs drawn from (0.1, 2] (Sqrt, Pow). <paramref name="Passes"/>: the pipeline that
/// makes the op (kiln:QuantizedMatMul from a MatMul by <c>quantize</c>); cases with one pipeline form one graph.
/// </summary>
public sealed record GridCase(string Op, string Inputs, string Node, string Constants = "", int Outputs = 1, bool Positive = false, string Passes = "dce")
{
    /// <summary>The element types of the inputs (or constants), for the grid's type count.</summary>
    public string Types => string.Join(",", Regex.Matches(Inputs + " " + Constants, @"\b(f32|i64|i32|bool)\[").Select(m => m.Groups[1].Value).Distinct());

    public override string ToString() => $"{Op}({Inputs}{(Constants == "" ? "" : "; " + Constants)}) = {Node}";
}

/// <summary>
/// The coverage grid of planned kernels (ggml's test-backend-ops in spirit): every op with a planned CPU kernel over
/// shapes (broadcast patterns, tails past a vector, symbolic sizes through windows), attribute values and element
/// types. All cases form one graph, so the grid compiles once per engine.
/// </summary>
public static class PlannedKernelGrid
{
    public static IReadOnlyList<GridCase> Cases()
    {
        var c = new List<GridCase>();
        // Elementwise binary ops: same shape, a scalar, a column, both sides broadcast, a per-channel [1, C, 1, 1].
        string[][] pairs = [["2, 3, 4", "2, 3, 4"], ["2, 3, 4", "1"], ["2, 3, 4", "3, 1"], ["1, 3, 1", "2, 1, 4"], ["2, 3, 5, 7", "1, 3, 1, 1"], ["1", "2, 9"]];
        foreach (var op in new[] { "Add", "Sub", "Mul", "Div" })
            foreach (var t in new[] { "f32", "i64", "i32" })
                foreach (var p in pairs)
                    c.Add(new(op, $"a: {t}[{p[0]}], b: {t}[{p[1]}]", $"{op}(%a, %b)"));
        foreach (var e in new[] { "2.0", "0.5", "3.0" })
            c.Add(new("Pow", "x: f32[2, 19]", $"Pow(%x, @e)", $"e: f32[] = [{e}]", Positive: true));
        foreach (var op in new[] { "Exp", "Neg", "Sqrt", "Cos", "Sin", "Erf", "Sigmoid", "Tanh", "Relu" })
            foreach (var s in new[] { "7", "2, 3, 5", "2, 16, 9" })
                c.Add(new(op, $"x: f32[{s}]", $"{op}(%x)", Positive: op == "Sqrt"));
        foreach (var s in new[] { "7", "2, 3, 17" })
        {
            c.Add(new("LeakyRelu", $"x: f32[{s}]", "LeakyRelu(%x) {alpha=0.2}"));
            c.Add(new("HardSigmoid", $"x: f32[{s}]", "HardSigmoid(%x) {alpha=0.25, beta=0.4}"));
            c.Add(new("HardSwish", $"x: f32[{s}]", "HardSwish(%x)"));
            c.Add(new("Clip", $"x: f32[{s}]", "Clip(%x, @lo, @hi)", "lo: f32[] = [-0.5], hi: f32[] = [0.75]"));
            c.Add(new("Clip", $"x: f32[{s}]", "Clip(%x, @lo)", "lo: f32[] = [0.1]"));
            c.Add(new("Gelu", $"x: f32[{s}]", "Gelu(%x)"));
            c.Add(new("Gelu", $"x: f32[{s}]", "Gelu(%x) {approximate=\"tanh\"}"));
            c.Add(new("kiln:GELU", $"x: f32[{s}]", "kiln:GELU(%x)"));
            c.Add(new("kiln:SiLU", $"x: f32[{s}]", "kiln:SiLU(%x)"));
        }
        foreach (var op in new[] { "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual" })
            foreach (var t in new[] { "f32", "i64" })
            {
                c.Add(new(op, $"a: {t}[2, 3], b: {t}[2, 3]", $"{op}(%a, %b)"));
                c.Add(new(op, $"a: {t}[2, 3], b: {t}[3]", $"{op}(%a, %b)"));
            }
        foreach (var t in new[] { "f32", "i64" })
        {
            c.Add(new("Where", $"m: bool[2, 3], a: {t}[2, 3], b: {t}[2, 3]", "Where(%m, %a, %b)"));
            c.Add(new("Where", $"m: bool[2, 1], a: {t}[3], b: {t}[2, 3]", "Where(%m, %a, %b)"));
        }
        // Cast codes: 1 f32, 6 i32, 7 i64.
        foreach (var (from, to) in new[] { ("f32", 7), ("f32", 6), ("i64", 1), ("i32", 1), ("i64", 6) })
            c.Add(new("Cast", $"x: {from}[3, 5]", $"Cast(%x) {{to={to}}}"));
        foreach (var op in new[] { "Softmax", "LogSoftmax" })
        {
            c.Add(new(op, "x: f32[3, 7]", $"{op}(%x) {{axis=-1}}"));
            c.Add(new(op, "x: f32[2, 3, 17]", $"{op}(%x) {{axis=2}}"));
        }
        c.Add(new("LayerNormalization", "x: f32[2, 5, 16]", "LayerNormalization(%x, @s, @b) {axis=-1, epsilon=0.00001}", $"s: f32[16] = {Ramp(16, 0.5, 0.1)}, b: f32[16] = {Ramp(16, -1, 0.125)}"));
        c.Add(new("LayerNormalization", "x: f32[2, 4, 8]", "LayerNormalization(%x, @s) {axis=1, epsilon=0.001}", $"s: f32[4, 8] = {Ramp(32, 0.2, 0.05)}"));
        foreach (var op in new[] { "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin" })
        {
            c.Add(new(op, "x: f32[2, 3, 17]", $"{op}(%x, @a)", "a: i64[1] = [-1]"));
            c.Add(new(op, "x: f32[2, 3, 5, 7]", $"{op}(%x, @a) {{keepdims=0}}", "a: i64[2] = [2, 3]"));
            c.Add(new(op, "x: f32[2, 6, 9]", $"{op}(%x, @a)", "a: i64[1] = [1]"));
            c.Add(new(op, "x: f32[4, 5]", $"{op}(%x) {{keepdims=0}}"));
        }
        c.Add(new("BatchNormalization", "x: f32[2, 3, 4, 5]", "BatchNormalization(%x, @g, @b, @m, @v) {epsilon=0.00001}",
            "g: f32[3] = [0.5, 1.5, 2.0], b: f32[3] = [0.1, -0.2, 0.3], m: f32[3] = [0.0, 1.0, -1.0], v: f32[3] = [1.0, 0.25, 4.0]"));
        c.Add(new("BatchNormalization", "x: f32[4, 3]", "BatchNormalization(%x, @g, @b, @m, @v)",
            "g: f32[3] = [0.5, 1.5, 2.0], b: f32[3] = [0.1, -0.2, 0.3], m: f32[3] = [0.0, 1.0, -1.0], v: f32[3] = [1.0, 0.25, 4.0]"));
        foreach (var t in new[] { "f32", "i64" })
        {
            c.Add(new("Split", $"x: {t}[6, 4]", "Split(%x, @s) {axis=0}", "s: i64[2] = [2, 4]", Outputs: 2));
            c.Add(new("Split", $"x: {t}[2, 6, 3]", "Split(%x, @s) {axis=1}", "s: i64[3] = [1, 2, 3]", Outputs: 3));
            c.Add(new("Slice", $"x: {t}[5, 6]", "Slice(%x, @st, @en, @ax)", "st: i64[1] = [1], en: i64[1] = [4], ax: i64[1] = [0]"));
            c.Add(new("Slice", $"x: {t}[5, 6]", "Slice(%x, @st, @en, @ax, @sp)", "st: i64[2] = [-4, 0], en: i64[2] = [100, 6], ax: i64[2] = [1, 0], sp: i64[2] = [2, 1]"));
            c.Add(new("Slice", $"x: {t}[5, 6]", "Slice(%x, @st, @en, @ax, @sp)", "st: i64[1] = [4], en: i64[1] = [0], ax: i64[1] = [0], sp: i64[1] = [-1]"));
            c.Add(new("Concat", $"a: {t}[2, 3], b: {t}[2, 5]", "Concat(%a, %b) {axis=1}"));
            c.Add(new("Concat", $"a: {t}[1, 3], b: {t}[2, 3]", "Concat(%a, %b) {axis=0}"));
            c.Add(new("Transpose", $"x: {t}[2, 3, 4]", "Transpose(%x) {perm=[2, 0, 1]}"));
            c.Add(new("Transpose", $"x: {t}[2, 3]", "Transpose(%x)"));
            c.Add(new("Gather", $"x: {t}[6, 4]", "Gather(%x, @i) {axis=0}", "i: i64[2, 2] = [0, 5, 3, -1]"));
            c.Add(new("Gather", $"x: {t}[2, 5, 3]", "Gather(%x, @i) {axis=1}", "i: i64[3] = [4, 0, -2]"));
            c.Add(new("Gather", $"x: {t}[3, 4]", "Gather(%x, @i) {axis=-1}", "i: i64[] = [2]"));
            c.Add(new("Pad", $"x: {t}[2, 3]", "Pad(%x, @p)", "p: i64[4] = [0, 1, 2, 2]"));
            c.Add(new("Pad", $"x: {t}[1, 2, 3, 4]", "Pad(%x, @p, @v)", $"p: i64[8] = [0, 0, 1, 2, 0, 0, 3, 0], v: {t}[] = [{(t == "f32" ? "1.5" : "7")}]"));
            c.Add(new("Pad", $"x: {t}[2, 3, 4]", "Pad(%x, @p, _, @a)", "p: i64[2] = [2, 1], a: i64[1] = [-1]"));
            c.Add(new("Reshape", $"x: {t}[2, 3, 4]", "Reshape(%x, @s)", "s: i64[2] = [6, -1]"));
            c.Add(new("Flatten", $"x: {t}[2, 3, 4]", "Flatten(%x) {axis=1}"));
            c.Add(new("Unsqueeze", $"x: {t}[2, 3]", "Unsqueeze(%x, @a)", "a: i64[1] = [1]"));
            c.Add(new("Squeeze", $"x: {t}[2, 1, 3]", "Squeeze(%x, @a)", "a: i64[1] = [1]"));
        }
        c.Add(new("MatMul", "x: f32[2, 3, 8]", "MatMul(%x, @w)", $"w: f32[8, 5] = {Ramp(40, -1, 0.05)}"));
        c.Add(new("MatMul", "a: f32[2, 3, 4], b: f32[2, 4, 5]", "MatMul(%a, %b)"));
        c.Add(new("MatMul", "a: f32[2, 1, 3, 4], b: f32[3, 4, 2]", "MatMul(%a, %b)"));
        c.Add(new("MatMul", "a: f32[5, 4], b: f32[4, 3]", "MatMul(%a, %b)"));
        c.Add(new("Gemm", "x: f32[3, 8]", "Gemm(%x, @w, @b)", $"w: f32[8, 5] = {Ramp(40, -1, 0.05)}, b: f32[5] = [0.1, 0.2, 0.3, 0.4, 0.5]"));
        c.Add(new("Gemm", "x: f32[3, 8]", "Gemm(%x, @w) {transB=1}", $"w: f32[5, 8] = {Ramp(40, 1, -0.05)}"));
        c.Add(new("kiln:MatMulAdd", "x: f32[2, 3, 8]", "kiln:MatMulAdd(%x, @w, @b)", $"w: f32[8, 5] = {Ramp(40, -1, 0.05)}, b: f32[5] = [0.1, 0.2, 0.3, 0.4, 0.5]"));
        c.Add(new("kiln:MatMulAdd", "x: f32[2, 3, 8]", "kiln:MatMulAdd(%x, @w, @b) {activation=\"Relu\"}", $"w: f32[8, 5] = {Ramp(40, -1, 0.05)}, b: f32[5] = [0.1, 0.2, 0.3, 0.4, 0.5]"));
        c.Add(new("kiln:RMSNorm", "x: f32[2, 3, 16]", "kiln:RMSNorm(%x, @s)", $"s: f32[16] = {Ramp(16, 0.5, 0.1)}"));
        foreach (var interleaved in new[] { 1, 0 })
            c.Add(new("kiln:RotaryEmbedding", "x: f32[1, 2, 4, 8]", $"kiln:RotaryEmbedding(%x, @cos, @sin) {{interleaved={interleaved}}}",
                $"cos: f32[4, 4] = {Ramp(16, 1, -0.05)}, sin: f32[4, 4] = {Ramp(16, 0, 0.05)}"));
        c.Add(new("kiln:GroupQueryAttention", "q: f32[1, 4, 3, 8], k: f32[1, 2, 5, 8], v: f32[1, 2, 5, 8]", "kiln:GroupQueryAttention(%q, %k, %v) {scale=0.35}"));
        c.Add(new("kiln:GroupQueryAttention", "q: f32[2, 2, 3, 4], k: f32[2, 2, 3, 4], v: f32[2, 2, 3, 4]", "kiln:GroupQueryAttention(%q, %k, %v, @m) {scale=0.5}",
            "m: f32[3, 3] = [0, -1e9, -1e9, 0, 0, -1e9, 0, 0, 0]"));
        // Convolutions: padded, strided, dilated, asymmetric pads, depthwise, grouped, 1×1 with bias, fused activations.
        var w3 = Ramp(108, -0.5, 0.01);
        c.Add(new("Conv", "x: f32[1, 3, 9, 11]", "Conv(%x, @w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}", $"w: f32[4, 3, 3, 3] = {w3}"));
        c.Add(new("Conv", "x: f32[2, 3, 9, 11]", "Conv(%x, @w, @b) {strides=[2, 2], pads=[1, 1, 1, 1]}", $"w: f32[4, 3, 3, 3] = {w3}, b: f32[4] = [0.1, -0.1, 0.2, 0.0]"));
        c.Add(new("Conv", "x: f32[1, 3, 12, 12]", "Conv(%x, @w) {dilations=[2, 2]}", $"w: f32[4, 3, 3, 3] = {w3}"));
        c.Add(new("Conv", "x: f32[1, 3, 8, 9]", "Conv(%x, @w) {pads=[0, 1, 1, 0], strides=[1, 2]}", $"w: f32[4, 3, 3, 3] = {w3}"));
        c.Add(new("Conv", "x: f32[2, 4, 8, 8]", "Conv(%x, @w, @b) {group=4, pads=[1, 1, 1, 1]}", $"w: f32[4, 1, 3, 3] = {Ramp(36, -0.3, 0.02)}, b: f32[4] = [0.1, 0.2, 0.3, 0.4]"));
        c.Add(new("Conv", "x: f32[1, 8, 10, 12]", "Conv(%x, @w) {group=8, strides=[2, 2], pads=[2, 2, 2, 2]}", $"w: f32[8, 1, 5, 5] = {Ramp(200, -0.3, 0.003)}"));
        c.Add(new("Conv", "x: f32[1, 4, 7, 7]", "Conv(%x, @w) {group=2}", $"w: f32[6, 2, 3, 3] = {Ramp(108, 0.4, -0.007)}"));
        c.Add(new("Conv", "x: f32[2, 6, 5, 5]", "Conv(%x, @w, @b)", $"w: f32[3, 6, 1, 1] = {Ramp(18, -0.4, 0.05)}, b: f32[3] = [1, 2, 3]"));
        foreach (var (act, par) in new[] { ("Relu", ""), ("HardSwish", ""), ("HardSigmoid", ", activation_params=[0.2, 0.5]"), ("LeakyRelu", ", activation_params=[0.1]"), ("Clip", ", activation_params=[0.0, 6.0]") })
            c.Add(new("kiln:ConvActivation", "x: f32[1, 3, 9, 11]", $"kiln:ConvActivation(%x, @w, @b) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation=\"{act}\"{par}}}",
                $"w: f32[4, 3, 3, 3] = {w3}, b: f32[4] = [0.1, -0.1, 0.2, 0.0]"));
        c.Add(new("ConvTranspose", "x: f32[1, 3, 4, 5]", "ConvTranspose(%x, @w, @b) {kernel_shape=[2, 2], strides=[2, 2]}", $"w: f32[3, 2, 2, 2] = {Ramp(24, -0.5, 0.04)}, b: f32[2] = [0.5, -0.5]"));
        c.Add(new("ConvTranspose", "x: f32[2, 2, 3, 3]", "ConvTranspose(%x, @w) {kernel_shape=[3, 1], strides=[3, 1]}", $"w: f32[2, 1, 3, 1] = {Ramp(6, -0.5, 0.2)}"));
        // Pooling: strided, padded, ceil mode, count_include_pad; global.
        foreach (var op in new[] { "MaxPool", "AveragePool" })
        {
            c.Add(new(op, "x: f32[1, 2, 9, 9]", $"{op}(%x) {{kernel_shape=[3, 3], strides=[2, 2]}}"));
            c.Add(new(op, "x: f32[2, 2, 8, 10]", $"{op}(%x) {{kernel_shape=[2, 2], strides=[2, 2]}}"));
            c.Add(new(op, "x: f32[1, 2, 7, 7]", $"{op}(%x) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}}"));
            c.Add(new(op, "x: f32[1, 2, 8, 8]", $"{op}(%x) {{kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1}}"));
        }
        c.Add(new("AveragePool", "x: f32[1, 2, 7, 7]", "AveragePool(%x) {kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1}"));
        c.Add(new("MaxPool", "x: f32[1, 2, 9, 9]", "MaxPool(%x) {kernel_shape=[3, 3], dilations=[2, 2]}"));
        foreach (var op in new[] { "GlobalAveragePool", "GlobalMaxPool" })
        {
            c.Add(new(op, "x: f32[2, 3, 5, 7]", $"{op}(%x)"));
            c.Add(new(op, "x: f32[1, 4, 6]", $"{op}(%x)"));
        }
        c.Add(new("Resize", "x: f32[1, 2, 3, 4]", "Resize(%x, _, @s) {mode=\"nearest\", coordinate_transformation_mode=\"asymmetric\", nearest_mode=\"floor\"}", "s: f32[4] = [1.0, 1.0, 2.0, 2.0]"));
        // Quantized products and lookups, made by the quantize pass from a MatMul, a Gemm with bias and a Gather.
        foreach (var passes in new[] { "quantize{bits=4},dce", "quantize{bits=8},dce", "quantize{bits=4 sym=false group=64},dce" })
        {
            var w = $"w: f32[64, 40] = {Ramp(64 * 40, -1, 0.0007)}";
            c.Add(new("kiln:QuantizedMatMul", "x: f32[3, 64]", "MatMul(%x, @w)", w, Passes: passes));
            c.Add(new("kiln:QuantizedMatMul", "x: f32[2, 3, 64]", "MatMul(%x, @w)", w, Passes: passes));
            c.Add(new("kiln:QuantizedGather", "", "Gather(@t, @i) {axis=0}", $"t: f32[40, 64] = {Ramp(64 * 40, 1, -0.0006)}, i: i64[2, 3] = [0, 39, 7, 7, 12, 1]", Passes: passes));
        }
        c.Add(new("Resize", "x: f32[2, 2, 3, 4]", "Resize(%x, _, @s) {mode=\"nearest\", coordinate_transformation_mode=\"asymmetric\", nearest_mode=\"floor\"}", "s: f32[4] = [1.0, 1.0, 3.0, 1.0]"));
        // Sparse products, made by prune and sparse-weights: decoding rows (≤ 4), prefill rows, a partial last panel,
        // inputs past one 256-input block, 2:4 and unstructured zeros, a Gemm with bias; f32 values and int8 codes (groups of
        // 32 inputs, a partial last one, and one scale per output).
        foreach (var passes in new[] { "prune{method=magnitude embedding=true},sparse-weights{min_bytes=0},dce", "prune{method=magnitude pattern=2:4 embedding=true},sparse-weights{min_bytes=0},dce",
            "prune{method=magnitude pattern=2:4 embedding=true},quantize{bits=8 embedding=same},sparse-weights{min_bytes=0 quantized=sparse},dce", "prune{method=magnitude embedding=true},quantize{bits=8 group=0 embedding=same},sparse-weights{min_bytes=0 quantized=sparse},dce" })
        {
            var w = $"w: f32[64, 40] = {Ramp(64 * 40, -1, 0.0007)}";
            c.Add(new("kiln:SparseMatMul", "x: f32[3, 64]", "MatMul(%x, @w)", w, Passes: passes));
            c.Add(new("kiln:SparseMatMul", "x: f32[2, 3, 64]", "MatMul(%x, @w)", w, Passes: passes));
            c.Add(new("kiln:SparseMatMul", "x: f32[9, 300]", "Gemm(%x, @w, @b)", $"w: f32[300, 33] = {Ramp(300 * 33, 1, -0.0002)}, b: f32[33] = {Ramp(33, -0.5, 0.03)}", Passes: passes));
        }
        return c;
    }

    /// <summary>n values a, a + step, … as a .kir list.</summary>
    private static string Ramp(int n, double a, double step) =>
        "[" + string.Join(", ", Enumerable.Range(0, n).Select(i => (a + i * step).ToString("0.######", CultureInfo.InvariantCulture))) + "]";

    /// <summary>Every case in one graph: case i's names prefixed with <c>c{i}_</c>, its outputs <c>c{i}_y</c> (<c>c{i}_y0</c>, … for several).</summary>
    public static string Graph(IReadOnlyList<GridCase> cases)
    {
        string Prefix(string text, int i) => Regex.Replace(text, @"([%@])([A-Za-z_][A-Za-z0-9_]*)", m => $"{m.Groups[1].Value}c{i}_{m.Groups[2].Value}");
        var inputs = new List<string>();
        var outputs = new List<string>();
        var body = new StringBuilder();
        for (var i = 0; i < cases.Count; i++)
        {
            var k = cases[i];
            inputs.AddRange(SplitDecls(k.Inputs).Select(d => $"%c{i}_{d}"));
            foreach (var d in SplitDecls(k.Constants)) body.Append($"  const @c{i}_{d}\n");
            var outs = k.Outputs == 1 ? [$"c{i}_y"] : Enumerable.Range(0, k.Outputs).Select(j => $"c{i}_y{j}").ToList();
            outputs.AddRange(outs.Select(o => $"%{o}: ?"));
            body.Append($"  {string.Join(", ", outs.Select(o => $"%{o}: ?"))} = {Prefix(k.Node, i)} loc(\"case{i}\")\n");
        }
        return $"graph @grid({string.Join(", ", inputs)}) -> ({string.Join(", ", outputs)}) {{\n{body}}}\n";
    }

    /// <summary>Splits "a: f32[2, 3], b: f32[3] = [1, 2, 3]" at the commas between declarations (not inside brackets).</summary>
    private static IEnumerable<string> SplitDecls(string text)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '[') depth++;
            else if (text[i] == ']') depth--;
            else if (text[i] == ',' && depth == 0)
            {
                yield return text[start..i].Trim();
                start = i + 1;
            }
        }
        if (text[start..].Trim() is { Length: > 0 } last) yield return last;
    }
}
