using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.CodeGen.Backends;

/// <summary>
/// The CPU backend: each node calls its Kiln.Runtime operator entry with the node's attributes baked into a
/// static attribute set (the same entries the evaluator runs, so compiled and interpreted results agree).
/// </summary>
public sealed partial class CpuBackend : ICodeBackend
{
    public string Name => "cpu";

    public string? Unsupported(Node node) =>
        OperatorTable.Has(OperatorTable.Key(node.Domain, node.Op)) ? null : $"the runtime has no operator {node.QualifiedOp}";

    public void EmitNode(NodeEmitContext c)
    {
        var node = c.Node;
        var key = OperatorTable.Key(node.Domain, node.Op);
        var op = c.Static("Action<OpContext>", "Op" + CSharp.TypeName(key), $"OperatorTable.Get({CSharp.String(key)})");
        var wanted = c.Static("bool[]", "Wanted", CSharp.Bools(node.Outputs.Select(o => o is not null)));
        var attrs = c.Attributes();
        var args = string.Concat(Enumerable.Range(0, node.Inputs.Count).Select(i => ", " + c.Input(i)));
        var call = $"Generated.Call({op}, {attrs}, {wanted}{args})";
        var present = Enumerable.Range(0, node.Outputs.Length).Where(i => node.Outputs[i] is not null).ToList();
        if (present.Count == 1 && node.Outputs.Length == 1)
        {
            c.Body.Line($"var {c.Output(0)} = {call}[0];");
            return;
        }
        var results = c.Output(present.Count > 0 ? present[0] : 0);
        if (present.Count == 0) { c.Body.Line($"{call};"); return; }
        // The first present output's local holds the results array briefly; each output gets its own local.
        var array = results + "_all";
        c.Body.Line($"var {array} = {call};");
        c.Body.Line($"var {results} = {array}[{present[0]}];");
        foreach (var i in present.Skip(1)) c.Body.Line($"var {c.Output(i)} = {array}[{i}];");
    }
}
