using System.Globalization;
using System.Text;

namespace Kiln.Ir;

/// <summary>
/// One dimension: a known number, a symbol (<c>batch</c>), or an integer polynomial over symbols
/// (<c>past_seq + seq</c>, <c>2*seq</c>) and floor quotients of such polynomials by a constant
/// (<c>(w + 1) / 2</c>, what a strided convolution makes of a dynamic width), or unknown (<c>?</c>). Kept in a
/// canonical form so equal expressions compare equal and print the same way.
/// </summary>
public sealed class Dim : IEquatable<Dim>
{
    // Each term: coefficient times a product of atoms (sorted, repeats allowed). The constant term has no atoms. An atom
    // is a symbol's name, or a floor quotient's key (QuotientMark + its text): the key determines the quotient, whose
    // numerator and divisor are kept in Quotients.
    private readonly Term[] _terms;

    private const char QuotientMark = '\u230A';
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, (Dim Numerator, long Divisor)> Quotients = new(StringComparer.Ordinal);
    private readonly bool _unknown;

    private readonly record struct Term(long Coeff, string[] Symbols)
    {
        public string Key => string.Join('*', Symbols);
    }

    public static readonly Dim Unknown = new([], unknown: true);
    public static readonly Dim Zero = new([], unknown: false);
    public static readonly Dim One = Const(1);

    private Dim(Term[] terms, bool unknown)
    {
        _terms = terms;
        _unknown = unknown;
    }

    public static Dim Const(long value) => value == 0 ? new Dim([], false) : new Dim([new Term(value, [])], false);

    public static Dim Symbol(string name) => new([new Term(1, [name])], false);

    public bool IsUnknown => _unknown;

    public bool IsConstant => !_unknown && (_terms.Length == 0 || (_terms.Length == 1 && _terms[0].Symbols.Length == 0));

    /// <summary>The number, when the dim is a known constant.</summary>
    public long? Value => IsConstant ? (_terms.Length == 0 ? 0 : _terms[0].Coeff) : null;

    public bool IsSymbol => !_unknown && _terms.Length == 1 && _terms[0].Coeff == 1 && _terms[0].Symbols.Length == 1 && !IsQuotient(_terms[0].Symbols[0]);

    public string? SymbolName => IsSymbol ? _terms[0].Symbols[0] : null;

    /// <summary>Symbols this dim mentions (inside quotients too).</summary>
    public IEnumerable<string> Symbols => _terms.SelectMany(t => t.Symbols).SelectMany(a => IsQuotient(a) ? Quotients[a].Numerator.Symbols : [a]).Distinct();

    private static bool IsQuotient(string atom) => atom.Length > 0 && atom[0] == QuotientMark;

    /// <summary>True when the dim is known to be non-negative: constants ≥ 0, and sums of symbols with positive coefficients.</summary>
    public bool IsKnownNonNegative => !_unknown && _terms.All(t => t.Coeff >= 0);

    private static Dim Normalize(IEnumerable<Term> terms)
    {
        var byKey = new SortedDictionary<string, Term>(StringComparer.Ordinal);
        foreach (var t in terms)
        {
            var key = t.Key;
            byKey[key] = byKey.TryGetValue(key, out var e) ? e with { Coeff = checked(e.Coeff + t.Coeff) } : t;
        }
        // Symbolic terms in symbol order, then the constant term last: "past_seq + seq + 1".
        var list = byKey.Values.Where(t => t.Coeff != 0).OrderBy(t => t.Symbols.Length == 0 ? 1 : 0).ThenBy(t => t.Key, StringComparer.Ordinal).ToArray();
        return new Dim(list, false);
    }

    public static Dim operator +(Dim a, Dim b) =>
        a._unknown || b._unknown ? Unknown : Normalize(a._terms.Concat(b._terms));

    public static Dim operator -(Dim a) => a._unknown ? Unknown : Normalize(a._terms.Select(t => t with { Coeff = -t.Coeff }));

    public static Dim operator -(Dim a, Dim b) => a + -b;

    public static Dim operator *(Dim a, Dim b)
    {
        if (a._unknown || b._unknown)
        {
            // 0 times anything is 0, even an unknown.
            if (a.Value == 0 || b.Value == 0) return Zero;
            return Unknown;
        }
        var terms = new List<Term>();
        foreach (var x in a._terms)
            foreach (var y in b._terms)
            {
                var syms = x.Symbols.Concat(y.Symbols).OrderBy(s => s, StringComparer.Ordinal).ToArray();
                terms.Add(new Term(checked(x.Coeff * y.Coeff), syms));
            }
        return Normalize(terms);
    }

    public static implicit operator Dim(long value) => Const(value);

    /// <summary>a / b when it divides exactly (by a constant, or by a single monomial every term contains); otherwise null.</summary>
    public static Dim? ExactDivide(Dim a, Dim b)
    {
        if (a._unknown || b._unknown) return null;
        if (b.Value is { } c)
        {
            if (c == 0) return null;
            if (a._terms.Any(t => t.Coeff % c != 0)) return null;
            return Normalize(a._terms.Select(t => t with { Coeff = t.Coeff / c }));
        }
        if (b._terms.Length != 1) return a.Equals(b) ? One : null;
        var bt = b._terms[0];
        var result = new List<Term>();
        foreach (var t in a._terms)
        {
            if (t.Coeff % bt.Coeff != 0) return null;
            var syms = t.Symbols.ToList();
            foreach (var s in bt.Symbols)
                if (!syms.Remove(s)) return null;
            result.Add(new Term(t.Coeff / bt.Coeff, syms.ToArray()));
        }
        return Normalize(result);
    }

    /// <summary>
    /// Floor division: for constants the number; by a positive constant, the exact quotient when there is one, else
    /// the multiples of the divisor taken out (each coefficient's floor quotient) and the rest a floor quotient atom
    /// whose numerator has coefficients in [0, divisor): <c>(w - 1) / 2 + 1</c> is <c>(w + 1) / 2</c>. Exact division
    /// for other symbolic divisors, unknown otherwise.
    /// </summary>
    public static Dim FloorDivide(Dim a, Dim b)
    {
        if (a.Value is { } x && b.Value is { } y && y != 0) return Const(FloorDiv(x, y));
        if (ExactDivide(a, b) is { } exact) return exact;
        if (a._unknown || b.Value is not { } c || c <= 0) return Unknown;
        var whole = new List<Term>();
        var rest = new List<Term>();
        foreach (var t in a._terms)
        {
            var q = FloorDiv(t.Coeff, c);
            whole.Add(t with { Coeff = q });
            rest.Add(t with { Coeff = t.Coeff - q * c });
        }
        var numerator = Normalize(rest);
        if (numerator.Value is { } r) return Normalize(whole) + FloorDiv(r, c);
        var key = QuotientMark + numerator.ToString() + "/" + c.ToString(CultureInfo.InvariantCulture);
        Quotients.TryAdd(key, (numerator, c));
        return Normalize(whole) + new Dim([new Term(1, [key])], false);
    }

    /// <summary>The quotient rounded up, ⌈a / b⌉ = ⌊(a + b − 1) / b⌋ for a positive constant b.</summary>
    public static Dim CeilDivide(Dim a, long b) => FloorDivide(a + (b - 1), b);

    private static long FloorDiv(long x, long y)
    {
        var q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) q--;
        return q;
    }

    /// <summary>Replaces symbols by dims.</summary>
    public Dim Substitute(IReadOnlyDictionary<string, Dim> map)
    {
        if (_unknown) return this;
        var result = Zero;
        foreach (var t in _terms)
        {
            Dim term = Const(t.Coeff);
            foreach (var s in t.Symbols)
                term *= IsQuotient(s) ? FloorDivide(Quotients[s].Numerator.Substitute(map), Quotients[s].Divisor)
                    : map.TryGetValue(s, out var d) ? d : Symbol(s);
            result += term;
        }
        return result;
    }

    public bool Equals(Dim? other)
    {
        if (other is null) return false;
        if (_unknown || other._unknown) return ReferenceEquals(this, other);
        if (_terms.Length != other._terms.Length) return false;
        for (var i = 0; i < _terms.Length; i++)
            if (_terms[i].Coeff != other._terms[i].Coeff || _terms[i].Key != other._terms[i].Key) return false;
        return true;
    }

    /// <summary>True only when both are known and provably equal.</summary>
    public bool SameAs(Dim other) => !_unknown && !other._unknown && Equals(other);

    public override bool Equals(object? obj) => obj is Dim d && Equals(d);

    public override int GetHashCode()
    {
        if (_unknown) return -1;
        var h = new HashCode();
        foreach (var t in _terms) { h.Add(t.Coeff); h.Add(t.Key); }
        return h.ToHashCode();
    }

    public override string ToString() =>
        _unknown ? "?" : _terms.Length == 0 ? "0" : Join(t => t.Symbols.Length == 0
            ? t.Coeff.ToString(CultureInfo.InvariantCulture)
            : (t.Coeff != 1 ? t.Coeff.ToString(CultureInfo.InvariantCulture) + "*" : "")
              + string.Join('*', t.Symbols.Select(a => IsQuotient(a) ? QuotientText(a, alone: t.Coeff == 1 && t.Symbols.Length == 1) : QuoteSymbol(a))), leadingMinus: "-");

    /// <summary>A quotient as it prints: <c>(w + 1) / 2</c>, in parentheses inside a product (the parser reads <c>2*(w + 1) / 2</c> as one quotient).</summary>
    private static string QuotientText(string atom, bool alone)
    {
        var (numerator, divisor) = Quotients[atom];
        var text = (numerator.IsSymbol ? numerator.ToString() : "(" + numerator + ")") + " / " + divisor.ToString(CultureInfo.InvariantCulture);
        return alone ? text : "(" + text + ")";
    }

    /// <summary>
    /// The dim as a long expression for generated code, written as the dim prints (<c>past_seq + seq</c>,
    /// <c>2L * seq - 1L</c>): each symbol written by <paramref name="symbol"/> (a long local), coefficients of 1
    /// left out. Null for an unknown dim.
    /// </summary>
    public string? ToExpression(Func<string, string> symbol) =>
        _unknown ? null : _terms.Length == 0 ? "0L" : Join(t =>
        {
            // A quotient's numerator is never negative (its coefficients are in [0, divisor)), so C#'s division is the floor.
            var factors = t.Symbols.Select(a => IsQuotient(a)
                ? $"(({Quotients[a].Numerator.ToExpression(symbol)}) / {Quotients[a].Divisor.ToString(CultureInfo.InvariantCulture)}L)"
                : symbol(a)).ToList();
            // A symbol product stays long without a 1L in front; a constant term or another coefficient is a long literal.
            if (t.Coeff != 1 || factors.Count == 0) factors.Insert(0, t.Coeff.ToString(CultureInfo.InvariantCulture) + "L");
            return string.Join(" * ", factors);
        }, leadingMinus: null);

    /// <summary>
    /// The terms joined with " + " and " - " (a later term is written with its coefficient's absolute value). A first
    /// term with symbols and a negative coefficient is written as <paramref name="leadingMinus"/> and its absolute
    /// value when that is given, else with its signed coefficient.
    /// </summary>
    private string Join(Func<Term, string> write, string? leadingMinus)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < _terms.Length; i++)
        {
            var t = _terms[i];
            if (i > 0)
            {
                sb.Append(t.Coeff < 0 ? " - " : " + ");
                t = t with { Coeff = Math.Abs(t.Coeff) };
            }
            else if (leadingMinus is not null && t.Coeff < 0 && t.Symbols.Length > 0)
            {
                sb.Append(leadingMinus);
                t = t with { Coeff = -t.Coeff };
            }
            sb.Append(write(t));
        }
        return sb.ToString();
    }

    /// <summary>Symbols print bare when they look like identifiers, quoted otherwise.</summary>
    public static string QuoteSymbol(string s) => IsPlainSymbol(s) ? s : KirEscaping.Quote(s);

    public static bool IsPlainSymbol(string s)
    {
        if (s.Length == 0 || !(char.IsAsciiLetter(s[0]) || s[0] == '_')) return false;
        foreach (var c in s)
            if (!(char.IsAsciiLetterOrDigit(c) || c == '_' || c == '.')) return false;
        return s[^1] != '.';
    }
}
