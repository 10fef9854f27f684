using Kiln.Ir;
using Kiln.Ir.Diagnostics;
using Kiln.Runtime.Operators;
using Kiln.Runtime.Weights;

namespace Kiln.Passes;

/// <summary>
/// <c>reconstruct{damp= skip=[…]}</c>: teacher-guided layer-wise reconstruction. The teacher is the model as it was
/// before the pipeline's first compression pass (<see cref="IPass.Compresses"/>); every product an earlier pass
/// compressed — quantized (<c>kiln:QuantizedMatMul</c>), pruned or factored (a float product whose weight is no longer
/// the teacher's) — is found in the teacher by its node name and, in graph order over the calibration data, has its
/// continuous parameters re-fitted by least squares (<see cref="LayerRefit"/>): fed what the student's compressed
/// earlier layers produce, it reproduces what the teacher's layer produced from the teacher's own inputs, so errors
/// of earlier layers are corrected rather than accumulated; a product that adds a residual also takes up what the
/// residual stream lost. What moves: a float weight's non-zero entries (a pruned row keeps its mask), a float low-rank
/// pair (both factors, or the second alone), a quantized weight's group scales (codes fixed), and a bias the product
/// has. The damp is chosen per layer on held-out calibration tokens unless given, and a layer no refit improves there
/// keeps its parameters. Structure, codes and masks never change, so the model's size and speed are the same. Each
/// layer's output error against the teacher before and after is in the report.
/// </summary>
public sealed class Reconstruct : IPass
{
    public string Name => "reconstruct";

    public string Summary => "re-fits compressed layers (pruned rows' kept weights, low-rank factors, quantized scales, biases) to the uncompressed model's outputs by least squares";

    public IReadOnlyList<string> OptionNames => ["damp", "skip"];

    public void Run(PassContext ctx)
    {
        var o = ctx.Options;
        // A given damp is the one candidate; by default the held-out tokens choose among several.
        IReadOnlyList<double> damps = o.String("damp") is null ? LayerRefit.Damps : [o.Number("damp", 1, 0, 100) / 100];
        var skip = o.List("skip");
        if (ctx.Teacher is not { } teacherModel)
            throw Bad("nothing to reconstruct: no compression pass (prune, prune-structured, lowrank, quantize, …) runs before it in this pipeline; its teacher is the model before the first of them");
        if (ctx.Calibration is not { } data)
            throw Bad("needs calibration data (kiln compile --calibration DIR|TOKENS.pb, or CalibrationData in MSBuild)");
        var teacher = teacherModel.Graph;
        var teacherLayers = QuantizableLayers.Find(teacher).Where(l => !l.IsEmbedding).ToDictionary(l => l.Node);
        var byName = teacher.Nodes.Where(n => n.Name is not null).GroupBy(n => n.Name!).Where(g => g.Count() == 1).ToDictionary(g => g.Key, g => g.Single());
        var teacherOrder = teacher.Nodes.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i);

        var targets = new Dictionary<Node, RefitLayer>();
        var lastTeacher = -1;
        var unmatched = new List<Node>();
        var sparse = 0;
        foreach (var node in ctx.Graph.Nodes)
        {
            if (node.QualifiedOp == KilnOp.Qualified.SparseMatMul) sparse++;
            if (!IsProduct(node)) continue;
            if (node.Name is null || !byName.TryGetValue(node.Name, out var t) || !teacherLayers.TryGetValue(t, out var teacherLayer)) { unmatched.Add(node); continue; }
            var layer = RefitLayer.Of(node, teacherLayer, out var why);
            if (layer is null)
            {
                if (why is not null) ctx.Notes.Add($"{node.Name}: left alone ({why})");
                continue;
            }
            if (Glob.MatchesAny(skip, teacherLayer.Weight.Name) || Glob.MatchesAny(skip, layer.WeightName)) { ctx.Notes.Add($"{teacherLayer.Weight.Name}: skipped (skip=)"); continue; }
            if (teacherOrder[t] <= lastTeacher) { ctx.Notes.Add($"{node.Name}: left alone (runs before a layer the teacher runs earlier)"); continue; }
            lastTeacher = teacherOrder[t];
            // A float low-rank pair is re-fitted as a whole when the walk reaches its first factor.
            var pair = layer.WithFirstFactor(ctx.Graph);
            targets[pair?.First ?? node] = pair ?? layer;
        }
        // A low-rank pair's first factor has no layer of its name in the teacher: it is re-fitted with its second.
        if (unmatched.Count(n => !targets.ContainsKey(n)) is > 0 and var left)
            ctx.Notes.Add($"{left} products without a layer of that name in the teacher left as they are");
        if (sparse > 0) ctx.Notes.Add($"{sparse} kiln:SparseMatMul products left as they are (run reconstruct before sparse-weights)");
        if (targets.Count == 0)
        {
            ctx.Notes.Add("no compressed layer to reconstruct");
            return;
        }

        var teacherValues = new SampleValues(teacher, data);
        var done = 0;
        CalibrationWalk.Run(ctx, data, targets.Keys.ToHashSet(), (node, z, values) =>
        {
            var layer = targets[node];
            ctx.Report($"layer {++done}/{targets.Count} {layer.WeightName} ({layer.Kind})");
            teacherValues.RunUpTo(layer.Teacher.Node);
            var x = teacherValues.InputsOf(layer.Teacher.Node);
            float[]? gap = null;
            if (layer.Residual)
            {
                // What the residual stream lost upstream: the teacher's C minus the student's.
                var teacherC = teacherValues.InputsOf(layer.Teacher.Node, 2);
                var studentC = values.InputsOf(layer.Student, layer.ResidualInput);
                if (teacherC.X.Length != (long)z.Tokens * layer.Outputs || studentC.X.Length != teacherC.X.Length)
                {
                    // A residual broadcast over the batch (not one row per token): nothing to subtract row by row.
                    ctx.Notes.Add($"{layer.WeightName}: left alone (its residual is not one row per token)");
                    return [node];
                }
                gap = teacherC.X;
                for (long i = 0; i < gap.Length; i++) gap[i] -= studentC.X[i];
            }
            var (fit, held) = RefitEquations.BuildSplit(z, layer.StudentBias is not null, x, layer.Teacher.WeightRows(), layer.TeacherBias, layer.Outputs, gap);
            layer.Refit(ctx, fit, held, damps);
            return [node];
        });
    }

    private static bool IsProduct(Node n) => n.QualifiedOp is "MatMul" or KilnOp.Qualified.MatMulAdd or "Gemm" or KilnOp.Qualified.QuantizedMatMul;

    internal static KilnException Bad(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass 'reconstruct': {what}"));
}

/// <summary>One student product <c>reconstruct</c> re-fits, with the teacher's layer of the same name.</summary>
internal sealed class RefitLayer
{
    private RefitLayer(Node student, QuantizableLayer teacher, Value weight, Value? scales, Value? bias, float[]? teacherBias, int inputs, int outputs)
    {
        (Student, Teacher, Weight, Scales, StudentBias, TeacherBias, Inputs, Outputs) = (student, teacher, weight, scales, bias, teacherBias, inputs, outputs);
    }

    public Node Student { get; }

    public QuantizableLayer Teacher { get; }

    /// <summary>The student's weight: f32 [inputs, outputs], or a quantized product's codes.</summary>
    public Value Weight { get; }

    /// <summary>A quantized product's scales (f16 [outputs, groups]); null for a float product.</summary>
    public Value? Scales { get; }

    public Value? StudentBias { get; }

    public float[]? TeacherBias { get; }

    /// <summary>Whether the product adds a residual (an activation C, input <see cref="ResidualInput"/>) rather than a bias.</summary>
    public bool Residual { get; private init; }

    public int ResidualInput { get; private init; }

    public int Inputs { get; }

    public int Outputs { get; }

    public string WeightName => Teacher.Weight.Name;

    public string Kind => First is not null ? "low-rank pair" : Scales is null ? "float rows" : "quantized scales";

    /// <summary>For a float low-rank pair, the first factor's product X·A (the student node is the second, ·B).</summary>
    public Node? First { get; private init; }

    /// <summary>
    /// This layer as a whole low-rank pair, when it is a float second factor B [r, out] read from a float product X·A
    /// that nothing else reads, with X as wide as the teacher's input and the residual (if any) computed before X·A;
    /// null otherwise.
    /// </summary>
    public RefitLayer? WithFirstFactor(Graph g)
    {
        if (Scales is not null || Student.Inputs[0]?.Producer is not { QualifiedOp: "MatMul" } a || a.Outputs[0]!.Uses.Count != 1) return null;
        if (a.Inputs[1] is not { Kind: ValueKind.Constant, Data: { Elem: DType.F32, Dims.Length: 2 } d, Uses.Count: 1 } || d.Dims[1] != Inputs) return null;
        if (d.Dims[0] != Teacher.Weight.Data!.Dims[Teacher.RowsAreOutputs ? 1 : 0]) return null;
        if (Residual && Student.Inputs[ResidualInput]!.Producer is { } c && g.Nodes.IndexOf(c) > g.Nodes.IndexOf(a)) return null;
        return new RefitLayer(Student, Teacher, Weight, Scales, StudentBias, TeacherBias, Inputs, Outputs) { Residual = Residual, ResidualInput = ResidualInput, First = a };
    }

    /// <summary>
    /// The layer if the student compressed it and reconstruct can re-fit it; else null with why (null too for a layer
    /// left as the teacher has it, which needs no note).
    /// </summary>
    public static RefitLayer? Of(Node n, QuantizableLayer teacher, out string? why)
    {
        why = null;
        var outputs = teacher.RowsAreOutputs ? (int)teacher.Weight.Data!.Dims[0] : (int)teacher.Weight.Data!.Dims[1];
        var t = teacher.Node;
        // C of MatMulAdd (and of a quantized product): a bias when constant, a residual when an activation.
        var teacherC = t.QualifiedOp is KilnOp.Qualified.MatMulAdd or "Gemm" && t.Inputs.Count > 2 ? t.Inputs[2] : null;
        var cIndex = n.QualifiedOp == KilnOp.Qualified.QuantizedMatMul ? 4 : 2;
        var studentC = n.QualifiedOp is KilnOp.Qualified.MatMulAdd or KilnOp.Qualified.QuantizedMatMul && n.Inputs.Count > cIndex ? n.Inputs[cIndex] : null;
        var residual = studentC is not null && studentC.Kind != ValueKind.Constant;
        if (residual != (teacherC is not null && teacherC.Kind != ValueKind.Constant)) { why = "adds a residual where the teacher's layer does not, or the other way round"; return null; }
        bool PerOutput(Value v) => v.TensorType is { Shape: { } s } && s.Dims.Count > 0 && s.Dims[^1].Value == outputs;
        if (residual && (!PerOutput(studentC!) || !PerOutput(teacherC!))) { why = "its residual is not one row per token"; return null; }
        float[]? teacherBias = null;
        if (!residual && teacherC is not null)
        {
            if (teacherC is not { Kind: ValueKind.Constant, Data: { Elem: DType.F32 } tbd } || tbd.ElementCount != outputs) { why = "the teacher's bias is not a constant per output"; return null; }
            teacherBias = tbd.ToArray<float>();
        }
        Value? Constant(int index, DType elem) => n.Inputs.Count > index && n.Inputs[index] is { Kind: ValueKind.Constant, Data: { } d } v && d.Elem == elem ? v : null;
        var bias = residual || studentC is null ? null : Constant(cIndex, DType.F32);
        if (!residual && studentC is not null && (bias is null || bias.Data!.ElementCount != outputs)) { why = "its bias is not a constant per output"; return null; }
        if (bias is { Uses.Count: > 1 }) { why = "its bias is shared with another node"; return null; }

        if (n.QualifiedOp == KilnOp.Qualified.QuantizedMatMul)
        {
            if (Constant(1, DType.U8) is not { } codes || Constant(2, DType.F16) is not { } scales) { why = "its codes or scales are not constants"; return null; }
            if (codes.Data!.Dims[0] != outputs) { why = $"{codes.Data.Dims[0]} outputs, the teacher's {outputs}"; return null; }
            if (scales.Uses.Count > 1) { why = "its scales are shared with another node (a tied table)"; return null; }
            return new RefitLayer(n, teacher, codes, scales, bias, teacherBias, (int)n.AttrInt("columns"), outputs) { Residual = residual, ResidualInput = cIndex };
        }
        if (n.QualifiedOp == "Gemm") { why = "Gemm; fuse turns constant-weight products into MatMul or kiln:MatMulAdd"; return null; }
        if (Constant(1, DType.F32) is not { Data.Dims.Length: 2 } weight) return null;
        // The teacher's own weight (and bias): nothing was compressed here.
        if (weight.Data == teacher.GraphWeight.Data && bias?.Data == teacherC?.Data) return null;
        if (weight.Data!.Dims[1] != outputs) { why = $"{weight.Data.Dims[1]} outputs, the teacher's {outputs}"; return null; }
        if (weight.Uses.Count > 1) { why = "its weight is shared with another node"; return null; }
        return new RefitLayer(n, teacher, weight, null, bias, teacherBias, (int)weight.Data.Dims[0], outputs) { Residual = residual, ResidualInput = cIndex };
    }

    /// <summary>Chooses and makes the layer's refit (<see cref="LayerRefit.Choose"/>), puts the new parameters in the graph and reports it.</summary>
    public void Refit(PassContext ctx, RefitEquations fit, RefitEquations? held, IReadOnlyList<double> damps)
    {
        var oldBias = StudentBias?.Data!.ToArray<float>();
        RefitResult r;
        string format;
        double bits;
        long bytes;
        if (First is { } first)
        {
            var a = first.Inputs[1]!.Data!.ToArray<float>();
            var rank = Inputs;
            var inputs = a.Length / rank;
            var expand = LayerRefit.LowRankExpansion(inputs, rank, Outputs);
            var b = Weight.Data!.ToArray<float>();
            r = LayerRefit.Choose(fit, held, damps, [.. a, .. b], oldBias,
                [(e, d) => LayerRefit.SolveLowRank(e, a, b, rank, d), (e, d) => LayerRefit.SolveSecondFactor(e, a, b, rank, d)], expand,
                (v, _, w, _) => Quantize.RelativeError(LayerRefit.LowRankProduct(v, inputs, rank, Outputs), LayerRefit.LowRankProduct(w, inputs, rank, Outputs)));
            if (r.Refused is null)
            {
                Replace(ctx, first, 1, ctx.Keep(TensorData.FromArray(DType.F32, [inputs, rank], r.Values[..a.Length])));
                Replace(ctx, Student, 1, ctx.Keep(TensorData.FromArray(DType.F32, [rank, Outputs], r.Values[a.Length..])));
            }
            format = $"f32 A [{inputs}, {rank}] · B [{rank}, {Outputs}]: " + (r.Refused is null && r.Solver == 1 ? "second factor" : "both factors");
            (bits, bytes) = (32, 4L * (a.Length + rank * Outputs));
        }
        else if (Scales is { } scales)
        {
            var layout = QuantizedLayout.Create((int)Student.AttrInt("bits"), Outputs, Inputs, (int)Student.AttrInt("group"), Student.Inputs.Count <= 3 || Student.Inputs[3] is null);
            var zeros = layout.Symmetric ? default : Student.Inputs[3]!.Data!.Bytes;
            var unit = QuantizedWeights.Dequantize(layout, Weight.Data!.Bytes, Enumerable.Repeat(Half.One, Outputs * layout.Groups).ToArray(), zeros);
            var old = scales.Data!.ToArray<Half>().Select(QuantizedWeights.FiniteScale).ToArray();
            r = LayerRefit.Choose(fit, held, damps, old, oldBias, [(e, d) => LayerRefit.SolveScales(e, unit, layout, old, oldBias, d)], LayerRefit.ScalesExpansion(unit, layout));
            if (r.Refused is null)
                Replace(ctx, Student, 2, TensorData.FromArray(DType.F16, [Outputs, layout.Groups], r.Values.Select(v => (Half)v).ToArray()));
            (format, bits, bytes) = ($"{layout.Name}: scales", layout.BitsPerWeight, layout.TotalBytes);
        }
        else
        {
            var rows = Prune.Transpose(Weight.Data!.ToArray<float>(), Inputs, Outputs);
            var zeros = rows.Count(v => v == 0);
            r = LayerRefit.Choose(fit, held, damps, rows, oldBias, [(e, d) => LayerRefit.SolveRows(e, rows, oldBias, d)], LayerRefit.RowsExpansion(Inputs, Outputs));
            if (r.Refused is null)
                Replace(ctx, Student, 1, ctx.Keep(TensorData.FromArray(DType.F32, [Inputs, Outputs], Prune.Transpose(r.Values, Outputs, Inputs))));
            format = Inputs != Teacher.Weight.Data!.Dims[Teacher.RowsAreOutputs ? 1 : 0] ? $"f32 [{Inputs}, {Outputs}]: all weights"
                : zeros > 0 ? $"f32: kept weights ({(double)zeros / rows.Length:P1} zeros stay)" : "f32: all weights";
            (bits, bytes) = (32, 4L * rows.Length);
        }
        if (StudentBias is not null)
        {
            format += " and bias";
            if (r.Refused is null) Replace(ctx, Student, Scales is null ? 2 : 4, TensorData.FromArray(DType.F32, StudentBias.Data!.Dims, r.Bias!));
        }
        ctx.Layers.Add(new LayerReport(WeightName, format, bits, bytes, 4L * Inputs * Outputs, r.Change, r.ErrorAfter,
            r.Refused ?? FormattableString.Invariant($"damp {r.Damp:0.###}")) { OutputErrorBefore = r.ErrorBefore });
        ctx.Count(r.Refused is null ? $"refit layers ({Kind})" : "layers kept as they were");
    }

    /// <summary>Points the node's input <paramref name="index"/> at a new constant with <paramref name="data"/>, dropping the old one.</summary>
    private static void Replace(PassContext ctx, Node node, int index, TensorData data)
    {
        var old = node.Inputs[index]!;
        var fresh = ctx.Graph.AddConstant(ctx.Graph.UniqueName(old.Name + ".refit"), data);
        node.SetInput(index, fresh);
        if (old.Uses.Count == 0 && old.Owner.Constants.Contains(old)) old.Owner.RemoveConstant(old);
    }
}
