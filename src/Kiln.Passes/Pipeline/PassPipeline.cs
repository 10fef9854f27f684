using System.Text;
using Kiln.Ir.Diagnostics;

namespace Kiln.Passes;

/// <summary>One step of a pipeline: a pass name and its options as written (<c>quantize{bits=4 skip=[lm_head*]}</c>).</summary>
public sealed record PassInvocation(string Name, PassOptions Options)
{
    public override string ToString() => Options.Count == 0 ? Name : $"{Name}{{{Options}}}";
}

/// <summary>
/// A textual pass pipeline, parsed. Grammar (docs/pipelines.md):
/// <code>
/// pipeline := step (',' step)*
/// step     := NAME ('{' option* '}')?
/// option   := KEY '=' value                      options are separated by spaces
/// value    := WORD | '[' (WORD (',' WORD)*)? ']'  a WORD may hold glob characters * and ?
/// </code>
/// </summary>
public sealed record PassPipeline(IReadOnlyList<PassInvocation> Steps)
{
    /// <summary>What runs when no pipeline is given.</summary>
    public const string Default = "fold,dce,cse,fuse";

    public override string ToString() => string.Join(",", Steps);

    public static PassPipeline Parse(string text)
    {
        var p = new Parser(text);
        var steps = new List<PassInvocation>();
        p.SkipSpace();
        if (p.AtEnd) return new PassPipeline(steps);
        while (true)
        {
            steps.Add(p.Step());
            p.SkipSpace();
            if (p.AtEnd) break;
            p.Expect(',');
        }
        return new PassPipeline(steps);
    }

    private sealed class Parser(string text)
    {
        private int _pos;

        public bool AtEnd => _pos >= text.Length;

        public void SkipSpace()
        {
            while (_pos < text.Length && char.IsWhiteSpace(text[_pos])) _pos++;
        }

        private KilnException Error(string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline,
            $"pipeline '{text}': {what} at column {_pos + 1}"));

        public void Expect(char c)
        {
            SkipSpace();
            if (_pos >= text.Length || text[_pos] != c) throw Error(AtEnd ? $"expected '{c}' but the text ended" : $"expected '{c}', found '{text[_pos]}'");
            _pos++;
        }

        private bool Peek(char c)
        {
            SkipSpace();
            return _pos < text.Length && text[_pos] == c;
        }

        private static bool IsWordChar(char c) => !char.IsWhiteSpace(c) && c is not (',' or '{' or '}' or '[' or ']' or '=');

        private string Word(string what)
        {
            SkipSpace();
            var start = _pos;
            while (_pos < text.Length && IsWordChar(text[_pos])) _pos++;
            if (_pos == start) throw Error(AtEnd ? $"expected {what} but the text ended" : $"expected {what}, found '{text[_pos]}'");
            return text[start.._pos];
        }

        public PassInvocation Step()
        {
            var name = Word("a pass name");
            var options = new List<KeyValuePair<string, IReadOnlyList<string>>>();
            if (Peek('{'))
            {
                _pos++;
                while (!Peek('}'))
                {
                    if (AtEnd) throw Error("expected '}' but the text ended");
                    var key = Word("an option name");
                    if (options.Any(o => o.Key == key)) throw Error($"option '{key}' of '{name}' is given twice");
                    Expect('=');
                    options.Add(new(key, Value()));
                    if (Peek(',')) _pos++;
                }
                _pos++;
            }
            return new PassInvocation(name, new PassOptions(name, options));
        }

        private IReadOnlyList<string> Value()
        {
            if (!Peek('[')) return [Word("a value")];
            _pos++;
            var items = new List<string>();
            if (Peek(']')) { _pos++; return items; }
            while (true)
            {
                items.Add(Word("a list item"));
                if (Peek(']')) { _pos++; return items; }
                Expect(',');
            }
        }
    }
}

/// <summary>The options of one pipeline step. A pass reads the ones it knows and <see cref="CheckAllUsed"/> rejects the rest.</summary>
public sealed class PassOptions(string pass, IReadOnlyList<KeyValuePair<string, IReadOnlyList<string>>> options)
{
    private readonly HashSet<string> _read = [];

    public static PassOptions None(string pass) => new(pass, []);

    public int Count => options.Count;

    private IReadOnlyList<string>? Find(string key)
    {
        _read.Add(key);
        foreach (var (k, v) in options) if (k == key) return v;
        return null;
    }

    private KilnException Bad(string key, string what) => new(new Diagnostic(DiagnosticCode.InvalidPipeline, $"pass '{pass}': option '{key}' {what}"));

    public string? String(string key)
    {
        var v = Find(key);
        if (v is null) return null;
        return v.Count == 1 ? v[0] : throw Bad(key, "takes one value, not a list");
    }

    public long Int(string key, long fallback, long min = long.MinValue, long max = long.MaxValue)
    {
        if (String(key) is not { } s) return fallback;
        if (!long.TryParse(s, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var x))
            throw Bad(key, $"must be an integer, not '{s}'");
        return x < min || x > max ? throw Bad(key, $"must be between {min} and {max}, not {x}") : x;
    }

    /// <summary>A number option (invariant culture: <c>0.5</c>), within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public double Number(string key, double fallback, double min, double max)
    {
        if (String(key) is not { } s) return fallback;
        if (!double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var x) || double.IsNaN(x))
            throw Bad(key, $"must be a number, not '{s}'");
        return x < min || x > max ? throw Bad(key, $"must be between {min.ToString(System.Globalization.CultureInfo.InvariantCulture)} and {max.ToString(System.Globalization.CultureInfo.InvariantCulture)}, not {s}") : x;
    }

    /// <summary>An integer option that takes one of a few values; any other value (or text) gets the same message listing them.</summary>
    public long OneOf(string key, long fallback, params long[] allowed)
    {
        var list = allowed.Length == 1 ? allowed[0].ToString(System.Globalization.CultureInfo.InvariantCulture)
            : string.Join(", ", allowed[..^1]) + " or " + allowed[^1];
        if (String(key) is not { } s) return fallback;
        return long.TryParse(s, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var x) && allowed.Contains(x)
            ? x : throw Bad(key, $"must be {list}, not '{s}'");
    }

    public bool Bool(string key, bool fallback) => String(key) switch
    {
        null => fallback,
        "true" or "1" or "on" => true,
        "false" or "0" or "off" => false,
        var s => throw Bad(key, $"must be true or false, not '{s}'"),
    };

    public IReadOnlyList<string>? List(string key) => Find(key);

    /// <summary>Throws for any option the pass did not read: a misspelt option is an error, never silently ignored.</summary>
    public void CheckAllUsed(IEnumerable<string> known)
    {
        foreach (var (k, _) in options)
            if (!_read.Contains(k))
                throw new KilnException(new Diagnostic(DiagnosticCode.InvalidPipeline,
                    $"pass '{pass}' has no option '{k}' (options: {string.Join(", ", known.DefaultIfEmpty("none"))})"));
    }

    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (var (k, v) in options)
        {
            if (sb.Length > 0) sb.Append(' ');
            sb.Append(k).Append('=').Append(v.Count == 1 ? v[0] : "[" + string.Join(", ", v) + "]");
        }
        return sb.ToString();
    }
}

/// <summary>Shell-style name patterns for options that select nodes or patterns: <c>*</c> any run, <c>?</c> one character.</summary>
public static class Glob
{
    public static bool Matches(string pattern, string text) => Match(pattern, 0, text, 0);

    public static bool MatchesAny(IReadOnlyList<string>? patterns, string? text) =>
        patterns is not null && text is not null && patterns.Any(p => Matches(p, text));

    private static bool Match(string p, int i, string t, int j)
    {
        while (i < p.Length)
        {
            if (p[i] == '*')
            {
                while (i < p.Length && p[i] == '*') i++;
                if (i == p.Length) return true;
                for (var k = j; k <= t.Length; k++)
                    if (Match(p, i, t, k)) return true;
                return false;
            }
            if (j >= t.Length || (p[i] != '?' && p[i] != t[j])) return false;
            i++;
            j++;
        }
        return j == t.Length;
    }
}
