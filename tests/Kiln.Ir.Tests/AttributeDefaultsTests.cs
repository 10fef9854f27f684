namespace Kiln.Ir.Tests;

/// <summary>Attributes are read one way: the node's value, or the default its op's registry definition declares.</summary>
public sealed class AttributeDefaultsTests
{
    [Fact]
    public void A_missing_attribute_reads_as_the_registry_default_and_a_present_one_as_itself()
    {
        using var model = KirParser.ParseModel("""
            graph @g(%x: f32[2, 4], %w: f32[4]) -> (%a: f32[2, 4], %b: f32[2, 4], %c: f32[2, 4]) {
              %a: f32[2, 4] = kiln:RMSNorm(%x, %w)
              %b: f32[2, 4] = kiln:RMSNorm(%x, %w) {epsilon=0.001}
              %c: f32[2, 4] = LeakyRelu(%x)
            }
            """);
        var nodes = model.Graph.Nodes;
        Assert.Equal(1e-5f, nodes[0].AttrFloat("epsilon"));
        Assert.Equal(1e-3f, nodes[1].AttrFloat("epsilon"));
        Assert.Equal(0.01f, nodes[2].AttrFloat("alpha"));
        // An attribute the op does not have (or has without a default) is a bug in the caller, said as such.
        Assert.Throws<InvalidOperationException>(() => nodes[2].AttrInt("axis"));
    }
}
