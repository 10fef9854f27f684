using System.Text;

namespace Kiln.CodeGen;

/// <summary>Indented C# text.</summary>
public sealed class CodeWriter
{
    private readonly StringBuilder _sb = new();
    private int _indent;

    public CodeWriter Line(string text = "")
    {
        if (text.Length > 0) _sb.Append(' ', _indent * 4).Append(text);
        _sb.Append('\n');
        return this;
    }

    /// <summary>Appends lines written by another writer as they are (already indented).</summary>
    public CodeWriter Raw(string text)
    {
        _sb.Append(text);
        if (text.Length > 0 && text[^1] != '\n') _sb.Append('\n');
        return this;
    }

    public CodeWriter Open(string text)
    {
        Line(text);
        Line("{");
        _indent++;
        return this;
    }

    public CodeWriter Close(string suffix = "")
    {
        _indent--;
        return Line("}" + suffix);
    }

    public int Indent { get => _indent; set => _indent = value; }

    public override string ToString() => _sb.ToString();
}
