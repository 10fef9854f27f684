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

    /// <summary>Text safe inside a // comment (no line breaks).</summary>
    public static string Comment(string s) => s.Replace('\r', ' ').Replace('\n', ' ');
}
