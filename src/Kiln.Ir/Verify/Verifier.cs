using Kiln.Ir.Diagnostics;
using Kiln.Ir.Ops;

namespace Kiln.Ir;

/// <summary>
/// Checks a graph's structure: every op known, input/output counts and attribute kinds as the op defines them,
/// every use after its definition, every name defined once. Each problem names the node (name and index) and the rule.
/// </summary>
public static class Verifier
{
    public static IReadOnlyList<Diagnostic> Check(Graph graph, OpRegistry? registry = null)
    {
        var diags = new List<Diagnostic>();
        CheckGraph(graph, registry ?? OpRegistry.Default, diags, new HashSet<Value>());
        return diags;
    }

    /// <summary>Throws a <see cref="KilnException"/> listing every problem found.</summary>
    public static void Verify(Graph graph, OpRegistry? registry = null)
    {
        var diags = Check(graph, registry);
        if (diags.Count > 0) throw new KilnException(diags);
    }

    private static void CheckGraph(Graph g, OpRegistry registry, List<Diagnostic> diags, HashSet<Value> outer)
    {
        var defined = new HashSet<Value>(outer);
        foreach (var v in g.Inputs.Concat(g.Constants)) defined.Add(v);
        for (var i = 0; i < g.Nodes.Count; i++)
        {
            var n = g.Nodes[i];
            Diagnostic Diag(DiagnosticCode code, string msg) => new(code, msg, NodeName: n.Name, NodeIndex: i, Op: n.QualifiedOp);
            var def = registry.Find(n.Domain, n.Op);
            if (def is null)
            {
                diags.Add(Diag(DiagnosticCode.UnsupportedOp, $"unknown op {n.QualifiedOp}"));
                continue;
            }
            for (var k = 0; k < n.Inputs.Count; k++)
                if (n.Inputs[k] is { } v && !defined.Contains(v))
                    diags.Add(Diag(DiagnosticCode.UseBeforeDefinition, $"input {k} {v} is used before it is defined"));
            var present = n.Inputs.Count;
            while (present > 0 && n.Inputs[present - 1] is null) present--;
            if (present < def.MinInputs || n.Inputs.Count > def.MaxInputs)
                diags.Add(Diag(DiagnosticCode.ArityMismatch, $"has {n.Inputs.Count} inputs; {def} takes {Range(def.MinInputs, def.MaxInputs)}"));
            for (var k = 0; k < Math.Min(n.Inputs.Count, def.Inputs.Count); k++)
                if (n.Inputs[k] is null && !def.Inputs[k].Optional && !def.Inputs[k].Variadic)
                    diags.Add(Diag(DiagnosticCode.ArityMismatch, $"required input {k} ({def.Inputs[k].Name}) is missing"));
            if (n.Outputs.Length < def.MinOutputs || n.Outputs.Length > def.MaxOutputs)
                diags.Add(Diag(DiagnosticCode.ArityMismatch, $"has {n.Outputs.Length} outputs; {def} produces {Range(def.MinOutputs, def.MaxOutputs)}"));
            foreach (var a in def.Attributes)
            {
                if (n.Attributes.TryGetValue(a.Name, out var value))
                {
                    if (value.Kind != a.Kind) diags.Add(Diag(DiagnosticCode.BadAttribute, $"attribute '{a.Name}' is {value.Kind}, {def} expects {a.Kind}"));
                }
                else if (a.Required)
                {
                    diags.Add(Diag(DiagnosticCode.BadAttribute, $"required attribute '{a.Name}' is missing"));
                }
            }
            foreach (var sub in n.Subgraphs) CheckGraph(sub, registry, diags, defined);
            foreach (var o in n.Outputs)
                if (o is not null) defined.Add(o);
        }
        foreach (var o in g.Outputs)
            if (!defined.Contains(o.Value))
                diags.Add(new Diagnostic(DiagnosticCode.UseBeforeDefinition, $"graph '{g.Name}' output '{o.Name}' is not defined"));
    }

    private static string Range(int min, int max) =>
        max == int.MaxValue ? $"at least {min}" : min == max ? $"{min}" : $"{min} to {max}";
}
