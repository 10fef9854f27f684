using Kiln.CodeGen.Planning;
using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen.Backends;

/// <summary>
/// Planned emission for the CPU: each supported op becomes one call into <c>Kiln.Runtime.Kernels.ArenaKernels</c>
/// (or the MatMul, Fused and TensorPrimitives span kernels) reading input spans and writing the output's span. The
/// kernels live by op family under <c>Cpu/Ops</c>, each with its "supports?" and "emit" together
/// (<see cref="Cpu.PlannedKernels"/>); this part keeps the elementwise chains' fused loops. A model with any other op
/// runs through the operator entries instead.
/// </summary>
public sealed partial class CpuBackend : IPlannedCodeBackend
{
    /// <summary>The ops (qualified names) with a planned CPU kernel.</summary>
    public static IEnumerable<string> PlannedOps => Cpu.PlannedKernels.ByOp.Keys;

    public string? UnsupportedPlanned(PlannedNodeContext c)
    {
        if (!Cpu.PlannedKernels.ByOp.TryGetValue(c.Node.QualifiedOp, out var kernel)) return $"no planned kernel for {c.Node.QualifiedOp}";
        if (!kernel.SeveralOutputs && (c.Node.Outputs.Length != 1 || c.Out(0) is null)) return "its planned kernel writes one output";
        return kernel.Unsupported(c);
    }

    public void EmitPlanned(PlannedNodeContext c)
    {
        if (!Cpu.PlannedKernels.ByOp.TryGetValue(c.Node.QualifiedOp, out var kernel))
            throw new InvalidOperationException($"EmitPlanned called for unsupported op {c.Node.QualifiedOp}");
        kernel.Emit(c);
    }

    public bool ComputesLastRowsOnly(PlannedNodeContext c) =>
        Cpu.PlannedKernels.ByOp.TryGetValue(c.Node.QualifiedOp, out var kernel) && kernel.LastRowsOnly is { } rows && rows(c);

    public bool IsFusableElementwise(Node node) => node.QualifiedOp is "Add" or "Sub" or "Mul" or "Div" or "Neg" or "Sqrt" or "Exp"
        or "Sigmoid" or "Relu" or "Cos" or "Sin" or KilnOp.Qualified.SiLU;

    /// <summary>A step's value as a scalar (float) or vector (Vector256&lt;float&gt;) expression of its arguments.</summary>
    private static string ElementwiseExpression(string op, IReadOnlyList<string> a, bool vector)
    {
        var one = vector ? "Vector256<float>.One" : "1f";
        var math = vector ? "Vector256" : "MathF";
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
            "Relu" => vector ? $"Vector256.Max({a[0]}, Vector256<float>.Zero)" : $"MathF.Max({a[0]}, 0f)",
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
                scalars.Add($"var {name}v = Vector256.Create({name});");
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
            var lines = spans.Select(e => vector ? $"var {e}x = Vector256.Create({e}.Slice(i, 8));" : $"var {e}x = {e}[i];").ToList();
            for (var k = 0; k < steps.Count; k++)
            {
                var args = steps[k].Args.Select(a => a.Operand is { } op ? (vector ? names[op].Vector : names[op].Scalar) : $"t{a.PreviousStep}").ToList();
                lines.Add($"var t{k} = {ElementwiseExpression(steps[k].Node.QualifiedOp, args, vector)};");
            }
            return string.Join(" ", lines);
        }
        // A method of its own: inside a model's long step method the JIT's inlining budget is spent, and the span
        // slicing and vector loads of the loop would stay calls (measured: most of the loop's time in prefill).
        w.Line("[MethodImpl(MethodImplOptions.NoInlining)]");
        w.Open($"static void Loop({string.Join(", ", parameters)})");
        foreach (var line in scalars) w.Line(line);
        w.Line("int i = 0;");
        w.Line("if (Vector256.IsHardwareAccelerated)");
        w.Line($"    for (; i + 8 <= y.Length; i += 8) {{ {Body(true)} Vector256.CopyTo(t{steps.Count - 1}, y.Slice(i, 8)); }}");
        w.Line($"for (; i < y.Length; i++) {{ {Body(false)} y[i] = t{steps.Count - 1}; }}");
        w.Close();
        w.Line($"Loop({string.Join(", ", arguments)});");
        w.Close();
    }
}
