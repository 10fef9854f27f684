using System.Globalization;
using System.Text;
using Kiln.Ir.Diagnostics;

namespace Kiln.Ir;

internal enum TokenKind { Ident, Number, String, ValueRef, ConstRef, Hash, Punct, End }

internal readonly record struct Token(TokenKind Kind, string Text, int Line, int Column)
{
    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of input",
        TokenKind.String => $"string {KirEscaping.Quote(Text)}",
        TokenKind.ValueRef => $"%{Text}",
        TokenKind.ConstRef => $"@{Text}",
        _ => $"'{Text}'",
    };
}

/// <summary>Splits .kir text into tokens. '#' followed by a hex digit is a hash; any other '#' starts a comment.</summary>
internal sealed class KirLexer(string text, string? file)
{
    private int _pos;
    private int _line = 1;
    private int _lineStart;

    public List<Token> Tokenize()
    {
        var tokens = new List<Token>();
        while (true)
        {
            SkipSpace();
            if (_pos >= text.Length)
            {
                tokens.Add(new Token(TokenKind.End, "", _line, _pos - _lineStart + 1));
                return tokens;
            }
            tokens.Add(Next());
        }
    }

    private void SkipSpace()
    {
        while (_pos < text.Length)
        {
            var c = text[_pos];
            if (c == '\n') { _pos++; _line++; _lineStart = _pos; }
            else if (char.IsWhiteSpace(c)) _pos++;
            else if (c == '#' && !(_pos + 1 < text.Length && char.IsAsciiHexDigit(text[_pos + 1])))
                while (_pos < text.Length && text[_pos] != '\n') _pos++;
            else return;
        }
    }

    private Token Next()
    {
        var line = _line;
        var col = _pos - _lineStart + 1;
        var c = text[_pos];
        Token Make(TokenKind k, string s) => new(k, s, line, col);
        if (c == '"') return Make(TokenKind.String, ReadString());
        if (c == '%' || c == '@')
        {
            _pos++;
            var name = _pos < text.Length && text[_pos] == '"' ? ReadString() : ReadName();
            if (name.Length == 0) throw Error(line, col, $"expected a name after '{c}'");
            return Make(c == '%' ? TokenKind.ValueRef : TokenKind.ConstRef, name);
        }
        if (c == '#')
        {
            _pos++;
            var start = _pos;
            while (_pos < text.Length && char.IsAsciiHexDigit(text[_pos])) _pos++;
            return Make(TokenKind.Hash, text[start.._pos]);
        }
        if (char.IsAsciiDigit(c))
        {
            var start = _pos;
            while (_pos < text.Length && char.IsAsciiDigit(text[_pos])) _pos++;
            if (_pos + 1 < text.Length && text[_pos] == '.' && char.IsAsciiDigit(text[_pos + 1]))
            {
                _pos++;
                while (_pos < text.Length && char.IsAsciiDigit(text[_pos])) _pos++;
            }
            if (_pos < text.Length && (text[_pos] == 'e' || text[_pos] == 'E'))
            {
                var save = _pos;
                _pos++;
                if (_pos < text.Length && (text[_pos] == '+' || text[_pos] == '-')) _pos++;
                if (_pos < text.Length && char.IsAsciiDigit(text[_pos]))
                    while (_pos < text.Length && char.IsAsciiDigit(text[_pos])) _pos++;
                else _pos = save;
            }
            return Make(TokenKind.Number, text[start.._pos]);
        }
        if (char.IsAsciiLetter(c) || c == '_') return Make(TokenKind.Ident, ReadName());
        if (c == '-' && _pos + 1 < text.Length && text[_pos + 1] == '>') { _pos += 2; return Make(TokenKind.Punct, "->"); }
        if ("(){}[],=:*+-?/".Contains(c)) { _pos++; return Make(TokenKind.Punct, c.ToString()); }
        throw Error(line, col, $"unexpected character '{c}'");
    }

    private string ReadName()
    {
        var start = _pos;
        while (_pos < text.Length && KirEscaping.IsNameChar(text[_pos]))
        {
            // ':' belongs to a name only when a name character follows (onnx::Add_1), so "%x: f32" splits.
            if (text[_pos] == ':' && !(_pos + 1 < text.Length && KirEscaping.IsNameChar(text[_pos + 1]))) break;
            _pos++;
        }
        return text[start.._pos];
    }

    private string ReadString()
    {
        var line = _line;
        var col = _pos - _lineStart + 1;
        _pos++;
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= text.Length || text[_pos] == '\n') throw Error(line, col, "unterminated string");
            var c = text[_pos++];
            if (c == '"') return sb.ToString();
            if (c != '\\') { sb.Append(c); continue; }
            if (_pos >= text.Length) throw Error(line, col, "unterminated string");
            var e = text[_pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case '"': sb.Append('"'); break;
                case '\\': sb.Append('\\'); break;
                case 'u':
                    if (_pos + 4 > text.Length || !int.TryParse(text.AsSpan(_pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var code))
                        throw Error(line, col, "bad \\u escape");
                    sb.Append((char)code);
                    _pos += 4;
                    break;
                default: throw Error(line, col, $"unknown escape '\\{e}'");
            }
        }
    }

    private KilnException Error(int line, int col, string message) =>
        new(new Diagnostic(DiagnosticCode.KirSyntax, $"line {line}, column {col}: {message}", file));
}
