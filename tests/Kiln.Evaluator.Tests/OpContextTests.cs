using Kiln.Runtime.Operators;

namespace Kiln.Evaluator.Tests;

/// <summary>Operator entries read attributes as given or as the op's registry default, never a default of their own.</summary>
public sealed class OpContextTests
{
    [Fact]
    public void An_attribute_reads_as_given_or_as_its_default_and_one_with_neither_is_a_bug()
    {
        var attributes = new OpAttributes().Set("axis", 2L).Default("epsilon", 1e-5f).Default("mode", "constant");
        var c = new OpContext(attributes, [], 1);
        Assert.Equal(2L, c.Int("axis"));
        Assert.Equal(1e-5f, c.Float("epsilon"));
        Assert.Equal("constant", c.Str("mode"));
        Assert.False(c.Has("epsilon"));
        var missing = Assert.Throws<InvalidOperationException>(() => c.Int("group"));
        Assert.Contains("'group'", missing.Message);
        Assert.Throws<InvalidOperationException>(() => c.Float("alpha"));
        Assert.Throws<InvalidOperationException>(() => c.Str("auto_pad"));
    }
}
