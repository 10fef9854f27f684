using Kiln.Ir.Analysis;

namespace Kiln.Ir.Tests;

/// <summary>The one liveness analysis: last reads by position, subgraph reads at their node, views keeping their root alive.</summary>
public sealed class LivenessTests
{
    private const string Text = """
        graph @g(%cond: bool[], %a: f32[4], %b: f32[4]) -> (%r: f32[4]) {
          %x: f32[4] = Relu(%a)
          %v: f32[4] = Identity(%x)
          %y: f32[4] = Neg(%b)
          %z: f32[4] = Abs(%v)
          %r: f32[4] = If(%cond) {else_branch=graph @else() -> (%e: f32[4]) {
            %e: f32[4] = Sigmoid(%y)
          }, then_branch=graph @then() -> (%t: f32[4]) {
            %t: f32[4] = Add(%z, %a)
          }}
        }
        """;

    [Fact]
    public void Subgraph_reads_count_at_the_node_that_holds_them()
    {
        using var model = KirParser.ParseModel(Text);
        var g = model.Graph;
        var last = Liveness.LastReads(g);
        Value V(string name) => g.Nodes.SelectMany(n => n.Outputs).OfType<Value>().Concat(g.Inputs).Single(v => v.Name == name);
        Assert.Equal(1, last[V("x")]);   // read by the Identity
        Assert.Equal(3, last[V("v")]);   // read by Abs
        Assert.Equal(4, last[V("y")]);   // read inside the If's else branch
        Assert.Equal(4, last[V("z")]);   // and the then branch
        Assert.Equal(4, last[V("a")]);   // a graph input read by Relu and again inside the If
        Assert.False(last.ContainsKey(V("r")));
    }

    [Fact]
    public void A_view_keeps_its_root_alive_and_a_node_can_run_elsewhere()
    {
        using var model = KirParser.ParseModel(Text);
        var g = model.Graph;
        var x = g.Nodes[0].Outputs[0]!;
        var v = g.Nodes[1].Outputs[0]!;
        // %v is a view of %x: Abs reading %v keeps %x; Abs itself runs at position 10 (say, at the end of a fused chain).
        var last = Liveness.LastReads(g, g.Nodes.Take(4).ToList(), n => n.Op == "Abs" ? 10 : g.Nodes.IndexOf(n), value => value == v ? x : value);
        Assert.Equal(10, last[x]);
        Assert.False(last.ContainsKey(v));
        Assert.False(last.ContainsKey(g.Nodes[3].Outputs[0]!)); // the If was left out of the order: nothing read %z
    }
}
