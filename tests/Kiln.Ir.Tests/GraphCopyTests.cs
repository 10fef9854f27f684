namespace Kiln.Ir.Tests;

/// <summary>A model's copy prints the same, shares constant data, and is independent of the original: subgraphs read the copy's values.</summary>
public sealed class GraphCopyTests
{
    private const string Text = """
        graph @g(%cond: bool[], %a: f32[4], %b: f32[4]) -> (%r: f32[4]) {
          const @w: f32[4] = [1.0, 2.0, 3.0, 4.0]
          %x: f32[4] = Relu(%a)
          %y: f32[4] = Mul(%b, @w)
          %r: f32[4] = If(%cond) {else_branch=graph @else() -> (%e: f32[4]) {
            %e: f32[4] = Sigmoid(%y)
          }, then_branch=graph @then() -> (%t: f32[4]) {
            %t: f32[4] = Add(%x, %a)
          }}
        }
        """;

    [Fact]
    public void A_copy_prints_the_same_and_changes_to_it_leave_the_original_alone()
    {
        using var model = KirParser.ParseModel(Text);
        var printed = KirPrinter.Print(model);
        using var copy = GraphCopy.Copy(model);
        Assert.Equal(printed, KirPrinter.Print(copy));

        var g = copy.Graph;
        Assert.Same(model.Graph.Constants.Single().Data, g.Constants.Single().Data);
        // The else branch reads the copy's %y, not the original's.
        var y = g.Nodes.Single(n => n.Op == "Mul").Outputs[0]!;
        var sigmoid = g.Nodes.Single(n => n.Op == "If").Subgraphs.SelectMany(s => s.Nodes).Single(n => n.Op == "Sigmoid");
        Assert.Same(y, sigmoid.Inputs[0]);

        var relu = g.Nodes.Single(n => n.Op == "Relu");
        relu.SetInput(0, g.Inputs[2]);
        g.Nodes.Single(n => n.Op == "Mul").SetInput(1, g.AddConstant("w2", TensorData.FromArray(DType.F32, [4], new float[4])));
        Assert.Equal(printed, KirPrinter.Print(model));
        Assert.NotEqual(printed, KirPrinter.Print(copy));
    }
}
