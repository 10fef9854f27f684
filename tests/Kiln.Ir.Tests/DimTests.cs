namespace Kiln.Ir.Tests;

public sealed class DimTests
{
    [Fact]
    public void SumsPrintInCanonicalOrder()
    {
        var d = Dim.Symbol("seq") + Dim.Symbol("past_seq");
        Assert.Equal("past_seq + seq", d.ToString());
        Assert.Equal(d, Dim.Symbol("past_seq") + Dim.Symbol("seq"));
        Assert.Equal("seq + 1", (Dim.Symbol("seq") + 1).ToString());
        Assert.Equal("2*seq - 3", (Dim.Symbol("seq") * 2 - 3).ToString());
        Assert.Equal("batch*seq", (Dim.Symbol("seq") * Dim.Symbol("batch")).ToString());
    }

    [Fact]
    public void ExpressionsForGeneratedCodeReadLikeTheDim()
    {
        string Local(string s) => "dim_" + s;
        Assert.Equal("dim_past_seq + dim_seq", (Dim.Symbol("seq") + Dim.Symbol("past_seq")).ToExpression(Local));
        Assert.Equal("2L * dim_seq - 3L", (Dim.Symbol("seq") * 2 - 3).ToExpression(Local));
        Assert.Equal("dim_batch * dim_seq", (Dim.Symbol("seq") * Dim.Symbol("batch")).ToExpression(Local));
        Assert.Equal("-1L * dim_s + 4L", (4 - Dim.Symbol("s")).ToExpression(Local));
        Assert.Equal("8L", Dim.Const(8).ToExpression(Local));
        Assert.Null(Dim.Unknown.ToExpression(Local));
    }

    [Fact]
    public void ArithmeticSimplifies()
    {
        var s = Dim.Symbol("s");
        Assert.Equal(Dim.Const(0), s - s);
        Assert.Equal(s, Dim.ExactDivide(s * 4, 4));
        Assert.Equal(Dim.Symbol("b"), Dim.ExactDivide(Dim.Symbol("b") * s, s));
        Assert.Null(Dim.ExactDivide(s, 4));
        Assert.Equal(Dim.Const(-2), Dim.FloorDivide(-3, 2));
        Assert.True((s + 1).IsKnownNonNegative);
        Assert.False(Dim.Unknown.SameAs(Dim.Unknown));
    }

    [Fact]
    public void FloorQuotientsByAConstantStaySymbolic()
    {
        var w = Dim.Symbol("w");
        // A stride-2, pad-1, kernel-3 window: ⌊(w + 2 − 3) / 2⌋ + 1 is ⌊(w + 1) / 2⌋.
        var half = Dim.FloorDivide(w - 1, 2) + 1;
        Assert.Equal("(w + 1) / 2", half.ToString());
        Assert.Equal(half, Dim.CeilDivide(w, 2));
        Assert.Equal(["w"], half.Symbols);
        Assert.False(half.IsSymbol);
        Assert.True(half.IsKnownNonNegative);
        // Multiples of the divisor come out; exact quotients need no atom; products parenthesize the quotient.
        Assert.Equal("w + (w + 1) / 2", Dim.FloorDivide(w * 3 + 1, 2).ToString());
        Assert.Equal(w, Dim.FloorDivide(w * 2, 2));
        Assert.Equal("2*((w + 1) / 2)", (half * 2).ToString());
        Assert.Equal("((h + 1) / 2 + 1) / 2", Dim.CeilDivide(Dim.CeilDivide(Dim.Symbol("h"), 2), 2).ToString());
        // Substituting a number evaluates the floor; the C# expression is the floor for every non-negative w.
        Assert.Equal(Dim.Const(4), half.Substitute(new Dictionary<string, Dim> { ["w"] = 7 }));
        Assert.Equal("8L * ((dim_w + 1L) / 2L)", (half * 8).ToExpression(s => "dim_" + s));
        foreach (var value in new long[] { 0, 1, 2, 7, 256 })
            Assert.Equal(8 * ((value + 1) / 2), (half * 8).Substitute(new Dictionary<string, Dim> { ["w"] = value }).Value);
    }

    [Fact]
    public void TextRoundTripsDims()
    {
        const string text = "graph @g(%x: f32[batch, past_seq + seq, 2*h - 1, ?, \"p2o.Dyn 0\", (w + 1) / 2, 2*((h + 1) / 2) + 1]) -> (%x: f32[*]) {\n}\n";
        var m = KirParser.ParseModel(text);
        Assert.Equal(text, KirPrinter.Print(m.Graph));
    }

    [Fact]
    public void ConstantsRoundTripBitExact()
    {
        const string text = "graph @g() -> (%c: f32[4]) {\n" +
            "  const @c: f32[4] = [0.1, -0.0, nan, -inf]\n" +
            "  const @h: f16[2] = [0.099975586, 65504.0]\n" +
            "  const @b: bool[2] = [true, false]\n" +
            "  const @s: string[2] = [\"a\\\"b\", \"\\n\"]\n" +
            "  const @q: u4[3] = hex\"2101\"\n" +
            "}\n";
        var m = KirParser.ParseModel(text);
        Assert.Equal(text, KirPrinter.Print(m.Graph));
    }
}
