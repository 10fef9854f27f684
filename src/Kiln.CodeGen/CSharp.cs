using System.Globalization;
using System.Text;
using Microsoft.CodeAnalysis.CSharp;

namespace Kiln.CodeGen;

/// <summary>C# literals and identifiers, written the same way every time (invariant culture, round-trip floats), so output is deterministic.</summary>
public static class CSharp
{
    public static string Long(long v) => v == long.MinValue ? "long.MinValue" : v.ToString(CultureInfo.InvariantCulture) + "L";

    public static string Int(int v) => v.ToString(CultureInfo.InvariantCulture);

    public static string Float(float v) =>
        float.IsNaN(v) ? "float.NaN" : float.IsPositiveInfinity(v) ? "float.PositiveInfinity" : float.IsNegativeInfinity(v) ? "float.NegativeInfinity"
        : v.ToString("R", CultureInfo.InvariantCulture) + "f";

    public static string String(string s) => SymbolDisplay.FormatLiteral(s, quote: true);

    public static string Longs(IEnumerable<long> v) => "new long[] { " + string.Join(", ", v.Select(Long)) + " }";

    public static string Ints(IEnumerable<int> v) => "new int[] { " + string.Join(", ", v.Select(Int)) + " }";

    public static string Floats(IEnumerable<float> v) => "new float[] { " + string.Join(", ", v.Select(Float)) + " }";

    public static string Strings(IEnumerable<string> v) => "new string[] { " + string.Join(", ", v.Select(String)) + " }";

    public static string Bools(IEnumerable<bool> v) => "new bool[] { " + string.Join(", ", v.Select(b => b ? "true" : "false")) + " }";

    /// <summary>A valid C# identifier from an ONNX name: other characters become '_', keywords get '@'.</summary>
    public static string Identifier(string name)
    {
        var sb = new StringBuilder();
        foreach (var c in name) sb.Append(char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_');
        if (sb.Length == 0 || char.IsAsciiDigit(sb[0])) sb.Insert(0, '_');
        var s = sb.ToString();
        return SyntaxFacts.GetKeywordKind(s) != SyntaxKind.None || SyntaxFacts.GetContextualKeywordKind(s) != SyntaxKind.None ? "@" + s : s;
    }

    /// <summary>
    /// Identifier characters for a suffix of a name, spelling arithmetic out (<c>past_seq + seq</c> →
    /// <c>past_seq_plus_seq</c>, <c>2*h - 1</c> → <c>2_x_h_minus_1</c>); other characters become '_', never doubled.
    /// </summary>
    public static string IdentifierWords(string text)
    {
        var sb = new StringBuilder();
        void Word(string w) { if (sb.Length > 0 && sb[^1] != '_') sb.Append('_'); sb.Append(w).Append('_'); }
        foreach (var c in text)
        {
            if (char.IsAsciiLetterOrDigit(c)) sb.Append(c);
            else if (c == '+') Word("plus");
            else if (c == '-') Word("minus");
            else if (c == '*') Word("x");
            else if (sb.Length > 0 && sb[^1] != '_') sb.Append('_');
        }
        return sb.ToString().Trim('_');
    }

    /// <summary>A type name from a model name: PascalCase of its words (<c>stories260k</c> → <c>Stories260k</c>).</summary>
    public static string TypeName(string name)
    {
        var sb = new StringBuilder();
        var upper = true;
        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c)) { upper = true; continue; }
            sb.Append(upper ? char.ToUpperInvariant(c) : c);
            upper = false;
        }
        if (sb.Length == 0 || char.IsAsciiDigit(sb[0])) sb.Insert(0, "Model");
        return sb.ToString();
    }

    /// <summary>
    /// Why <paramref name="name"/> cannot be the generated class's name, or null when it can: a C# identifier, not a
    /// keyword, and not all lowercase ASCII letters (C# reserves those for future keywords: warning CS8981).
    /// </summary>
    public static string? ClassNameProblem(string name)
    {
        if (name.Length == 0) return "it is empty";
        if (!SyntaxFacts.IsValidIdentifier(name)) return "it is not a C# identifier (letters, digits and '_', not starting with a digit)";
        if (SyntaxFacts.GetKeywordKind(name) != SyntaxKind.None || SyntaxFacts.GetContextualKeywordKind(name) != SyntaxKind.None) return "it is a C# keyword";
        if (name.All(char.IsAsciiLetterLower)) return "a type name of only lowercase letters is reserved for C# keywords (CS8981)";
        return null;
    }

    /// <summary>Why <paramref name="name"/> cannot be the generated class's namespace, or null: C# identifiers, not keywords, separated by dots.</summary>
    public static string? NamespaceProblem(string name)
    {
        if (name.Length == 0) return "it is empty";
        foreach (var part in name.Split('.'))
        {
            if (part.Length == 0) return "it has an empty part between dots";
            if (!SyntaxFacts.IsValidIdentifier(part)) return $"'{part}' is not a C# identifier (letters, digits and '_', not starting with a digit)";
            if (SyntaxFacts.GetKeywordKind(part) != SyntaxKind.None) return $"'{part}' is a C# keyword";
        }
        return null;
    }

    /// <summary>Text safe inside a // comment (no line breaks).</summary>
    public static string Comment(string s) => s.Replace('\r', ' ').Replace('\n', ' ');
}
