using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;

namespace Kiln.CodeGen;

/// <summary>
/// Keeps generated lines readable: a line longer than <see cref="MaxLine"/> characters gets its outermost list
/// (a kernel call's arguments, a method's parameters, an array's elements) one item per line, indented under it;
/// nested lists still too long are wrapped the same way on the next round. A sum (a message in two parts) breaks after its +; a line with none of these stays.
/// </summary>
public static class LineWrapping
{
    public const int MaxLine = 140;

    public static string Wrap(string source)
    {
        for (var round = 0; round < 4; round++)
        {
            var tree = CSharpSyntaxTree.ParseText(source);
            var root = tree.GetRoot();
            var text = tree.GetText();
            var indents = new Dictionary<SyntaxNode, string>();
            foreach (var line in text.Lines)
            {
                if (line.Span.Length <= MaxLine) continue;
                // Pre-order: the first list starting on the line is the outermost one there.
                bool OnLine(SyntaxNode a) => LineOf(text, a.SpanStart) == line.LineNumber && LineOf(text, a.Span.End) == line.LineNumber;
                // A call chain (attribute sets: new OpAttributes().Set(…).Set(…)) breaks before each call; else the first list.
                var list = root.DescendantNodes(line.Span).FirstOrDefault(a => ChainLength(a) >= 3 && OnLine(a))
                    ?? root.DescendantNodes(line.Span).FirstOrDefault(a => Items(a) >= 2 && OnLine(a))
                    ?? root.DescendantNodes(line.Span).FirstOrDefault(a => a is BinaryExpressionSyntax { RawKind: (int)SyntaxKind.AddExpression } && OnLine(a));
                if (list is null) continue;
                var lineText = line.ToString();
                indents[list] = lineText[..(lineText.Length - lineText.TrimStart().Length)] + "    ";
            }
            if (indents.Count == 0) break;
            source = root.ReplaceNodes(indents.Keys, (original, rewritten) => OnePerLine(rewritten, indents[original])).ToFullString();
        }
        return source;
    }

    private static int LineOf(SourceText text, int position) => text.Lines.GetLineFromPosition(position).LineNumber;

    /// <summary>How many calls a chain <c>x.A(…).B(…)…</c> ending at this node makes (0 for anything else).</summary>
    private static int ChainLength(SyntaxNode n)
    {
        var count = 0;
        while (n is InvocationExpressionSyntax { Expression: MemberAccessExpressionSyntax member })
        {
            count++;
            n = member.Expression;
        }
        return count;
    }

    /// <summary>The chain with each call on its own line, the dot first.</summary>
    private static SyntaxNode BreakChain(InvocationExpressionSyntax chain, string indent)
    {
        var member = (MemberAccessExpressionSyntax)chain.Expression;
        var inner = member.Expression is InvocationExpressionSyntax { Expression: MemberAccessExpressionSyntax } next ? BreakChain(next, indent) : member.Expression;
        var dot = member.OperatorToken.WithLeadingTrivia(SyntaxFactory.EndOfLine("\n"), SyntaxFactory.Whitespace(indent));
        return chain.WithExpression(member.WithExpression((ExpressionSyntax)inner.WithTrailingTrivia()).WithOperatorToken(dot));
    }

    private static int Items(SyntaxNode n) => n switch
    {
        ArgumentListSyntax a => a.Arguments.Count,
        ParameterListSyntax p => p.Parameters.Count,
        InitializerExpressionSyntax i => i.Expressions.Count,
        _ => 0,
    };

    private static SyntaxNode OnePerLine(SyntaxNode list, string indent) => list switch
    {
        InvocationExpressionSyntax chain when ChainLength(chain) >= 3 => BreakChain(chain, indent),
        BinaryExpressionSyntax sum => sum.WithOperatorToken(sum.OperatorToken.WithTrailingTrivia()).WithRight(sum.Right.WithLeadingTrivia(SyntaxFactory.EndOfLine("\n"), SyntaxFactory.Whitespace(indent))),
        ArgumentListSyntax a => a.WithArguments(Separated(a.Arguments, indent)),
        ParameterListSyntax p => p.WithParameters(Separated(p.Parameters, indent)),
        InitializerExpressionSyntax i => i.WithExpressions(Separated(i.Expressions, indent)).WithOpenBraceToken(i.OpenBraceToken.WithTrailingTrivia())
            .WithCloseBraceToken(i.CloseBraceToken.WithLeadingTrivia(SyntaxFactory.EndOfLine("\n"), SyntaxFactory.Whitespace(indent[..^4]))),
        _ => list,
    };

    private static SeparatedSyntaxList<T> Separated<T>(SeparatedSyntaxList<T> items, string indent) where T : SyntaxNode
    {
        var placed = items.Select(a => a.WithLeadingTrivia(SyntaxFactory.EndOfLine("\n"), SyntaxFactory.Whitespace(indent)).WithTrailingTrivia());
        var commas = items.GetSeparators().Select(_ => SyntaxFactory.Token(SyntaxKind.CommaToken));
        return SyntaxFactory.SeparatedList(placed, commas);
    }
}
