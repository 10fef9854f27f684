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
    public void TextRoundTripsDims()
    {
        const string text = "graph @g(%x: f32[batch, past_seq + seq, 2*h - 1, ?, \"p2o.Dyn 0\"]) -> (%x: f32[*]) {\n}\n";
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
