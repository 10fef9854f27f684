using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen.Backends;

/// <summary>
/// Planned emission for the CPU: each supported op becomes one call into <c>Kiln.Runtime.Kernels.ArenaKernels</c>
/// (or the MatMul, Fused and TensorPrimitives span kernels) reading input spans and writing the output's span.
/// The ops are those decoder LLMs keep after <c>fold,dce,cse,fuse</c>; a model with any other op runs through the
/// operator entries instead.
/// </summary>
public sealed partial class CpuBackend : IPlannedCodeBackend
{
    private static readonly Dictionary<string, string> Unary = new(StringComparer.Ordinal)
    {
        ["Cos"] = "System.Numerics.Tensors.TensorPrimitives.Cos<float>", ["Sin"] = "System.Numerics.Tensors.TensorPrimitives.Sin<float>",
        ["Exp"] = "System.Numerics.Tensors.TensorPrimitives.Exp<float>", ["Neg"] = "System.Numerics.Tensors.TensorPrimitives.Negate<float>",
        ["Sqrt"] = "System.Numerics.Tensors.TensorPrimitives.Sqrt<float>", ["Tanh"] = "System.Numerics.Tensors.TensorPrimitives.Tanh<float>",
        ["Sigmoid"] = "System.Numerics.Tensors.TensorPrimitives.Sigmoid<float>", [KilnOp.Qualified.SiLU] = "Kiln.Runtime.Kernels.Fused.Silu",
    };

    private static readonly Dictionary<string, string> BinaryOps = new(StringComparer.Ordinal)
    {
        ["Add"] = "AddOp", ["Sub"] = "SubOp", ["Mul"] = "MulOp", ["Div"] = "DivOp",
    };

    private static bool Numeric(ElementType e) => e is ElementType.F32 or ElementType.F64 or ElementType.I64 or ElementType.I32;

    public string? UnsupportedPlanned(PlannedNodeContext c)
    {
        var n = c.Node;
        var x = c.In(0);
        var y = c.Out(0);
        if (n.Outputs.Length != 1 || y is null) return "planned kernels produce one output";
        switch (n.QualifiedOp)
        {
            case var op when Unary.ContainsKey(op):
                return x!.Elem == ElementType.F32 && y.Elem == ElementType.F32 ? null : "f32 only";
            case var op when BinaryOps.ContainsKey(op):
                return Numeric(y.Elem) && c.In(1)!.Elem == y.Elem && x!.Elem == y.Elem && y.Rank <= 8 ? null : "numeric operands of one type";
            case "Relu":
                return x!.Elem == ElementType.F32 ? null : "f32 only";
            case "Greater":
                return Numeric(x!.Elem) && c.In(1)!.Elem == x.Elem && y.Rank <= 8 ? null : "numeric operands of one type";
            case "Where":
                return c.In(0)!.Elem == ElementType.Bool && c.In(1)!.Elem == y.Elem && c.In(2)!.Elem == y.Elem && y.ClrType != "" && y.Rank <= 8 ? null : "bool condition";
            case "Cast":
                return x!.ClrType != "" && y.ClrType != "" && y.Elem != ElementType.Bool && x.Elem != ElementType.Bool ? null : "numeric types";
            case "Range":
                return Numeric(y.Elem) ? null : "numeric range";
            case "Gather":
                return (n.Attr<IntAttr>("axis")?.Value ?? 0) == 0 && x!.Rank >= 1 && c.In(1)!.Elem == ElementType.I64 && x.ClrType != "" ? null : "axis 0 with i64 indices";
            case KilnOp.Qualified.RmsNorm:
                return x!.Elem == ElementType.F32 && x.Rank >= 1 ? null : "f32";
            case KilnOp.Qualified.RotaryEmbedding:
                return x!.Elem == ElementType.F32 && x.Rank >= 2 && Kiln.Runtime.Kernels.Fused.RotaryPositionAxis(x.Rank, c.In(1)!.Dims).Problem is null
                    ? null : "f32 of rank ≥ 2, cos/sin varying along one axis";
            case "MatMul" or KilnOp.Qualified.MatMulAdd:
                return x!.Elem == ElementType.F32 && x.Rank >= 2 && c.In(1) is { Storage: PlannedStorage.Constant, Rank: 2 } ? null : "f32 activations times a 2-D weight";
            case "Gemm":
                return x!.Elem == ElementType.F32 && x.Rank == 2 && c.In(1) is { Storage: PlannedStorage.Constant, Rank: 2 }
                    && (n.Attr<IntAttr>("transA")?.Value ?? 0) == 0 && (n.Attr<FloatAttr>("alpha")?.Value ?? 1f) == 1f && (n.Attr<FloatAttr>("beta")?.Value ?? 1f) == 1f
                    ? null : "A·op(W) (+ C) with alpha = beta = 1";
            case KilnOp.Qualified.QuantizedMatMul:
                return x!.Elem == ElementType.F32 && x.Rank >= 1 && new[] { 1, 2, 3, 5 }.All(i => c.In(i) is null or { Storage: PlannedStorage.Constant })
                    && (c.In(4) is not { } bias || bias.Elem == ElementType.F32 && (bias.Dims.SequenceEqual(y.Dims) || bias.Rank == 1 && bias.Dims[0] == y.Dims[^1]))
                    ? null : "f32 activations, constant codes, C the product's shape or one row";
            case KilnOp.Qualified.QuantizedGather:
                return c.In(3)!.Elem == ElementType.I64 && c.In(0) is { Storage: PlannedStorage.Constant } ? null : "i64 indices into a constant table";
            case "Transpose":
                return x!.ClrType != "" && x.Rank <= 8 ? null : "rank ≤ 8";
            case "Concat":
                return y.ClrType != "" ? null : "numeric";
            case KilnOp.Qualified.GroupQueryAttention:
                if (x!.Elem != ElementType.F32 || x.Rank != 4) return "f32 rank-4 Q";
                if (c.In(3) is { } mask && (mask.Rank < 2 || mask.Dims.Take(mask.Rank - 2).Any(d => d != "1"))) return "a mask of [s, t] (leading dims 1)";
                return null;
            default:
                return $"no planned kernel for {n.QualifiedOp}";
        }
    }

    public void EmitPlanned(PlannedNodeContext c)
    {
        var n = c.Node;
        var x = c.In(0)!;
        var y = c.Out(0)!;
        var w = c.Body;
        switch (n.QualifiedOp)
        {
            case var op when Unary.ContainsKey(op):
                w.Line($"{Unary[op]}({x.Span}, {y.Span});");
                break;
            case var op when BinaryOps.ContainsKey(op):
                var b = c.In(1)!;
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Binary<{y.ClrType}, Kiln.Runtime.Kernels.{BinaryOps[op]}<{y.ClrType}>>({x.Span}, {x.Shape}, {b.Span}, {b.Shape}, {y.Span}, {y.Shape});");
                break;
            case "Relu":
                w.Line($"System.Numerics.Tensors.TensorPrimitives.Max<float>({x.Span}, 0f, {y.Span});");
                break;
            case "Greater":
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Greater<{x.ClrType}>({x.Span}, {x.Shape}, {c.In(1)!.Span}, {c.In(1)!.Shape}, {y.Span}, {y.Shape});");
                break;
            case "Where":
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Where<{y.ClrType}>({x.Span}, {x.Shape}, {c.In(1)!.Span}, {c.In(1)!.Shape}, {c.In(2)!.Span}, {c.In(2)!.Shape}, {y.Span}, {y.Shape});");
                break;
            case "Cast":
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Cast<{x.ClrType}, {y.ClrType}>({x.Span}, {y.Span});");
                break;
            case "Range":
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Range<{y.ClrType}>({x.Span}[0], {c.In(2)!.Span}[0], {y.Span});");
                break;
            case "Gather":
                var rowLength = x.Rank == 1 ? "1" : "(" + string.Join(" * ", x.Dims.Skip(1)) + ")";
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.GatherRows<{x.ClrType}>({x.Span}, {x.Dims[0]}, {rowLength}, {c.In(1)!.Span}, {y.Span});");
                break;
            case KilnOp.Qualified.RmsNorm:
                w.Line($"Kiln.Runtime.Kernels.Fused.RmsNorm({x.Span}, {c.In(1)!.Span}, {y.Span}, {x.Dims[^1]}, {CSharp.Float(n.Attr<FloatAttr>("epsilon")?.Value ?? 1e-5f)});");
                break;
            case KilnOp.Qualified.RotaryEmbedding:
            {
                // Positions run along the one axis where cos/sin are not 1; the rows after it share a position.
                var axis = Kiln.Runtime.Kernels.Fused.RotaryPositionAxis(x.Rank, c.In(1)!.Dims).Axis;
                var s = axis < 0 ? "1" : x.Dims[axis];
                var inner = axis < 0 || axis + 1 >= x.Rank - 1 ? "1" : "(" + string.Join(" * ", x.Dims[(axis + 1)..^1]) + ")";
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Rotary({x.Span}, {c.In(1)!.Span}, {c.In(2)!.Span}, {y.Span}, {inner}, {s}, {x.Dims[^1]}, {((n.Attr<IntAttr>("interleaved")?.Value ?? 1) != 0 ? "true" : "false")});");
                break;
            }
            case "MatMul":
            {
                var wt = c.In(1)!;
                var (k, nn) = (wt.Dims[0], wt.Dims[1]);
                var last = LastRows(c, x, wt, y, k, nn, transB: false);
                w.Line($"Kiln.Runtime.Kernels.MatMul.Gemm({x.Span}, {k}, false, {wt.Span}, {nn}, false, {y.Span}, {nn}, {x.Count} / {k}, {nn}, {k}, false, {wt.WeightField}, 0);");
                if (last) w.Close();
                break;
            }
            case KilnOp.Qualified.MatMulAdd:
            {
                var wt = c.In(1)!;
                var (k, nn) = (wt.Dims[0], wt.Dims[1]);
                var act = n.Attr<StringAttr>("activation")?.Value ?? "";
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.MatMulAdd({x.Span}, {wt.Span}, {wt.WeightField}, {c.In(2)!.Span}, {y.Span}, {x.Count} / {k}, {nn}, {k}, {CSharp.String(act)});");
                break;
            }
            case "Gemm":
            {
                var wt = c.In(1)!;
                var transB = (n.Attr<IntAttr>("transB")?.Value ?? 0) != 0;
                var (k, nn) = transB ? (wt.Dims[1], wt.Dims[0]) : (wt.Dims[0], wt.Dims[1]);
                var accumulate = "false";
                var lastRows = LastRows(c, x, wt, y, k, nn, transB);
                if (c.In(2) is { } bias)
                {
                    // C is broadcast into Y first (zeros + C), then the product accumulates onto it.
                    w.Line($"{y.Span}.Clear();");
                    w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Binary<float, Kiln.Runtime.Kernels.AddOp<float>>({y.Span}, {y.Shape}, {bias.Span}, {bias.Shape}, {y.Span}, {y.Shape});");
                    accumulate = "true";
                }
                w.Line($"Kiln.Runtime.Kernels.MatMul.Gemm({x.Span}, {k}, false, {wt.Span}, {wt.Dims[1]}, {(transB ? "true" : "false")}, {y.Span}, {nn}, {x.Dims[0]}, {nn}, {k}, {accumulate}, {wt.WeightField}, 0);");
                if (lastRows) w.Close();
                break;
            }
            case KilnOp.Qualified.QuantizedMatMul:
            {
                var layout = Layout(n, c.In(1)!, c.In(3) is null);
                var zeros = c.In(3)?.Span ?? "default";
                var act = n.Attr<StringAttr>("activation")?.Value ?? "";
                var cols = n.Attr<IntAttr>("columns")!.Value;
                var last = false;
                if (c.LastRowsOnly is { } condition)
                {
                    w.Open($"if ({condition})");
                    w.Line($"for (var row = 0; row < batch; row++) Kiln.Runtime.Kernels.QuantizedMatMul.Multiply({x.Span}.Slice((row * seq + seq - 1) * {cols}, {cols}), 1, {layout}, {c.In(1)!.Span}, {c.In(2)!.Span}, {zeros}, {y.Span}.Slice(row * {y.Dims[^1]}, {y.Dims[^1]}), false, {n.Attr<IntAttr>("activation_bits")?.Value ?? 0}, {c.In(5)?.Span ?? "default"});");
                    w.Close();
                    w.Open("else");
                    last = true;
                }
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.QuantizedMatMul({x.Span}, {layout}, {c.In(1)!.Span}, {c.In(2)!.Span}, {zeros}, {c.In(4)?.Span ?? "default"}, {y.Span}, {CSharp.String(act)}, {n.Attr<IntAttr>("activation_bits")?.Value ?? 0}, {c.In(5)?.Span ?? "default"});");
                if (last) w.Close();
                break;
            }
            case KilnOp.Qualified.QuantizedGather:
            {
                var layout = Layout(n, x, c.In(2) is null);
                w.Line($"Kiln.Runtime.Kernels.QuantizedOps.GatherRows({layout}, {x.Span}, {c.In(1)!.Span}, {c.In(2)?.Span ?? "default"}, {c.In(3)!.Span}, {y.Span});");
                break;
            }
            case "Transpose":
            {
                var perm = n.Attr<IntsAttr>("perm")?.Value.Select(v => (int)v).ToArray() ?? Enumerable.Range(0, x.Rank).Reverse().ToArray();
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Transpose<{x.ClrType}>({x.Span}, {x.Shape}, stackalloc int[] {{ {string.Join(", ", perm)} }}, {y.Span});");
                break;
            }
            case "Concat":
                EmitConcat(c, y);
                break;
            case KilnOp.Qualified.GroupQueryAttention:
            {
                var (k, v) = (c.In(1)!, c.In(2)!);
                var scale = CSharp.Float(n.Attr<FloatAttr>("scale")!.Value);
                var mask = c.In(3);
                var strides = "default, 0, 0, 0, 0";
                if (mask is not null)
                {
                    string rows = mask.Dims[^2], cols = mask.Dims[^1];
                    strides = $"{mask.Span}, 0, 0, ({rows} == 1 ? 0 : {cols}), ({cols} == 1 ? 0 : 1)";
                }
                var headStride = k.HeadStride ?? $"{k.Dims[2]} * {k.Dims[3]}";
                var dims = $"{x.Dims[0]}, {x.Dims[1]}, {x.Dims[2]}, {x.Dims[3]}, {k.Dims[1]}, {k.Dims[2]}";
                if (k.KvScales is { } keyScales && v.KvScales is { } valueScales)
                    w.Line($"Kiln.Runtime.Kernels.ArenaKernels.AttentionInt8({x.Span}, {k.Span}, {keyScales}, {v.Span}, {valueScales}, {strides}, {y.Span}, {dims}, cache.Capacity, {scale});");
                else if (n.Attr<IntAttr>("kv_bits")?.Value == 8)
                    w.Line($"Kiln.Runtime.Kernels.ArenaKernels.AttentionRoundedKv({x.Span}, {k.Span}, {v.Span}, {strides}, {y.Span}, {dims}, {headStride}, {scale});");
                else
                    w.Line($"Kiln.Runtime.Kernels.ArenaKernels.Attention({x.Span}, {k.Span}, {v.Span}, {strides}, {y.Span}, {dims}, {headStride}, {scale});");
                break;
            }
            default:
                throw new InvalidOperationException($"EmitPlanned called for unsupported op {n.QualifiedOp}");
        }
    }

    /// <summary>The layout of a quantized matrix as a C# expression (a struct: nothing is allocated per call).</summary>
    private static string Layout(Node n, PlannedOperand codes, bool symmetric) =>
        $"Kiln.Runtime.Weights.QuantizedLayout.Create({n.Attr<IntAttr>("bits")!.Value}, {codes.Dims[0]}, {n.Attr<IntAttr>("columns")!.Value}, {n.Attr<IntAttr>("group")!.Value}, {(symmetric ? "true" : "false")})";

    /// <summary>For a step's logits: when only last positions are wanted, one row product per batch row; else (returns true: the caller closes the block) the full product.</summary>
    private static bool LastRows(PlannedNodeContext c, PlannedOperand x, PlannedOperand wt, PlannedOperand y, string k, string n, bool transB)
    {
        if (c.LastRowsOnly is not { } condition) return false;
        c.Body.Open($"if ({condition})");
        c.Body.Line($"for (var row = 0; row < batch; row++) Kiln.Runtime.Kernels.MatMul.Gemm({x.Span}.Slice((row * seq + seq - 1) * {k}, {k}), {k}, false, {wt.Span}, {wt.Dims[1]}, {(transB ? "true" : "false")}, {y.Span}.Slice(row * {n}, {n}), {n}, 1, {n}, {k}, false, {wt.WeightField}, 0);");
        c.Body.Close();
        c.Body.Open("else");
        return true;
    }

    public bool IsFusableElementwise(Node node) => node.QualifiedOp is "Add" or "Sub" or "Mul" or "Div" or "Neg" or "Sqrt" or "Exp"
        or "Sigmoid" or "Relu" or "Cos" or "Sin" or KilnOp.Qualified.SiLU;

    /// <summary>A step's value as a scalar (float) or vector (Vector256&lt;float&gt;) expression of its arguments.</summary>
    private static string ElementwiseExpression(string op, IReadOnlyList<string> a, bool vector)
    {
        var one = vector ? "System.Runtime.Intrinsics.Vector256<float>.One" : "1f";
        var math = vector ? "System.Runtime.Intrinsics.Vector256" : "MathF";
        return op switch
        {
            "Add" => $"({a[0]} + {a[1]})",
            "Sub" => $"({a[0]} - {a[1]})",
            "Mul" => $"({a[0]} * {a[1]})",
            "Div" => $"({a[0]} / {a[1]})",
            "Neg" => $"(-{a[0]})",
            "Sqrt" => $"{math}.Sqrt({a[0]})",
            "Exp" => $"{math}.Exp({a[0]})",
            "Cos" => $"{math}.Cos({a[0]})",
            "Sin" => $"{math}.Sin({a[0]})",
            "Relu" => vector ? $"System.Runtime.Intrinsics.Vector256.Max({a[0]}, System.Runtime.Intrinsics.Vector256<float>.Zero)" : $"MathF.Max({a[0]}, 0f)",
            "Sigmoid" => $"({one} / ({one} + {math}.Exp(-{a[0]})))",
            KilnOp.Qualified.SiLU => $"({a[0]} / ({one} + {math}.Exp(-{a[0]})))",
            _ => throw new InvalidOperationException($"{op} is not a fusable elementwise op"),
        };
    }

    public void EmitElementwiseLoop(CodeWriter w, IReadOnlyList<ElementwiseStep> steps, PlannedOperand output)
    {
        w.Line($"// one loop for {string.Join(" → ", steps.Select(s => CSharp.Comment(s.Node.Name ?? s.Node.Op) + " (" + s.Node.QualifiedOp + ")"))}");
        w.Open("");
        // Operands as parameters: spans read per element, one-element operands as a float (and a broadcast vector).
        var names = new Dictionary<PlannedOperand, (string Scalar, string Vector)>();
        var spans = new List<string>();
        var parameters = new List<string>();
        var arguments = new List<string>();
        var scalars = new List<string>();
        var locals = 0;
        foreach (var arg in steps.SelectMany(s => s.Args))
        {
            if (arg.Operand is not { } op || names.ContainsKey(op)) continue;
            var name = $"e{locals++}";
            if (arg.IsScalar)
            {
                parameters.Add($"float {name}");
                arguments.Add($"{op.Span}[0]");
                scalars.Add($"var {name}v = System.Runtime.Intrinsics.Vector256.Create({name});");
                names[op] = (name, name + "v");
            }
            else
            {
                parameters.Add($"ReadOnlySpan<float> {name}");
                arguments.Add(op.Span);
                names[op] = ($"{name}x", $"{name}x");
                spans.Add(name);
            }
        }
        parameters.Add("Span<float> y");
        arguments.Add(output.Span);
        string Body(bool vector)
        {
            // Each operand is read once per element (or vector of 8), then the steps run on registers.
            var lines = spans.Select(e => vector ? $"var {e}x = System.Runtime.Intrinsics.Vector256.Create({e}.Slice(i, 8));" : $"var {e}x = {e}[i];").ToList();
            for (var k = 0; k < steps.Count; k++)
            {
                var args = steps[k].Args.Select(a => a.Operand is { } op ? (vector ? names[op].Vector : names[op].Scalar) : $"t{a.PreviousStep}").ToList();
                lines.Add($"var t{k} = {ElementwiseExpression(steps[k].Node.QualifiedOp, args, vector)};");
            }
            return string.Join(" ", lines);
        }
        // A method of its own: inside a model's long step method the JIT's inlining budget is spent, and the span
        // slicing and vector loads of the loop would stay calls (measured: most of the loop's time in prefill).
        w.Line("[System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]");
        w.Open($"static void Loop({string.Join(", ", parameters)})");
        foreach (var line in scalars) w.Line(line);
        w.Line("int i = 0;");
        w.Line("if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)");
        w.Line($"    for (; i + 8 <= y.Length; i += 8) {{ {Body(true)} System.Runtime.Intrinsics.Vector256.CopyTo(t{steps.Count - 1}, y.Slice(i, 8)); }}");
        w.Line($"for (; i < y.Length; i++) {{ {Body(false)} y[i] = t{steps.Count - 1}; }}");
        w.Close();
        w.Line($"Loop({string.Join(", ", arguments)});");
        w.Close();
    }

    private static void EmitConcat(PlannedNodeContext c, PlannedOperand y)
    {
        var w = c.Body;
        var rank = y.Rank;
        var axis = (int)(c.Node.Attr<IntAttr>("axis")?.Value ?? 0);
        if (axis < 0) axis += rank;
        if (y.Storage == PlannedStorage.KvCache)
        {
            // The past already sits in the cache: only the new positions are written, after it.
            var fresh = c.In(1)!;
            if (y.KvScales is { } scales)
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.KvAppendInt8({fresh.Span}, {y.Span}, {scales}, {fresh.Dims[0]} * {fresh.Dims[1]}, {fresh.Dims[2]}, {fresh.Dims[3]}, cache.Length, cache.Capacity);");
            else
                w.Line($"Kiln.Runtime.Kernels.ArenaKernels.KvAppend({fresh.Span}, {y.Span}, {fresh.Dims[0]} * {fresh.Dims[1]}, {fresh.Dims[2]}, {fresh.Dims[3]}, cache.Length, cache.Capacity);");
            return;
        }
        var outer = axis == 0 ? "1" : "(" + string.Join(" * ", y.Dims.Take(axis)) + ")";
        var block = "(" + string.Join(" * ", y.Dims.Skip(axis)) + ")";
        var offset = "0";
        for (var i = 0; i < c.InputCount; i++)
        {
            var x = c.In(i)!;
            var part = "(" + string.Join(" * ", x.Dims.Skip(axis)) + ")";
            w.Line($"Kiln.Runtime.Kernels.ArenaKernels.ConcatPart<{y.ClrType}>({x.Span}, {outer}, {part}, {y.Span}, {block}, {offset});");
            offset = offset == "0" ? part : offset + " + " + part;
        }
    }
}
