using System.Globalization;
using System.Text;

namespace Kiln.Ir;

/// <summary>Quoting and number formatting shared by the .kir printer and parser.</summary>
public static class KirEscaping
{
    public static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (var ch in s)
        {
            switch (ch)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (ch < 0x20 || ch == 0x7f) sb.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(ch);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    /// <summary>Characters of a value name printed without quotes. ':' is allowed inside (onnx::Add_1) but not at the end.</summary>
    public static bool IsNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-' or '/' or ':';

    /// <summary>A value or constant name: bare when it is made of name characters and does not end in ':', quoted otherwise.</summary>
    public static string Name(string name)
    {
        if (name.Length == 0 || name[^1] == ':' || name == "_" ) return Quote(name);
        foreach (var c in name)
            if (!IsNameChar(c)) return Quote(name);
        for (var i = 0; i + 1 < name.Length; i++)
            if (name[i] == ':' && !IsNameChar(name[i + 1])) return Quote(name);
        return name;
    }

    /// <summary>A float that reads back bit for bit and never looks like an int.</summary>
    public static string Float(double v, bool single)
    {
        if (double.IsNaN(v)) return "nan";
        if (double.IsPositiveInfinity(v)) return "inf";
        if (double.IsNegativeInfinity(v)) return "-inf";
        var s = single ? ((float)v).ToString("R", CultureInfo.InvariantCulture) : v.ToString("R", CultureInfo.InvariantCulture);
        if (s.IndexOfAny(['.', 'E', 'e']) < 0) s += ".0";
        return s.Replace("E", "e");
    }
}
