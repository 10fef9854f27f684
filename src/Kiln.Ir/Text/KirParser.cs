using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Kiln.Ir.Diagnostics;

namespace Kiln.Ir;

/// <summary>Resolves <c>weight #hash</c> references of .kir text to tensor data.</summary>
public interface IWeightSource
{
    TensorData? Find(string hash, TensorType type);
}

/// <summary>Weights looked up among tensors already in memory (for example, the constants of the graph that was printed).</summary>
public sealed class InMemoryWeights : IWeightSource
{
    private readonly Dictionary<string, TensorData> _byHash = [];

    public InMemoryWeights(IEnumerable<TensorData> tensors)
    {
        foreach (var t in tensors) _byHash.TryAdd(t.ContentHash, t);
    }

    public TensorData? Find(string hash, TensorType type) => _byHash.GetValueOrDefault(hash);
}

/// <summary>Parses .kir text (docs/kir-format.md) into a model or graph. The inverse of <see cref="KirPrinter"/>.</summary>
public sealed class KirParser
{
    private readonly List<Token> _tokens;
    private readonly IWeightSource? _weights;
    private readonly string? _file;
    private int _pos;

    private KirParser(string text, IWeightSource? weights, string? file)
    {
        _file = file;
        _weights = weights;
        _tokens = new KirLexer(text, file).Tokenize();
    }

    public static Model ParseModel(string text, IWeightSource? weights = null, string? file = null)
    {
        var p = new KirParser(text, weights, file);
        var m = p.Model();
        p.Expect(TokenKind.End);
        return m;
    }

    private Token Peek(int ahead = 0) => _tokens[Math.Min(_pos + ahead, _tokens.Count - 1)];

    private Token Take() => _tokens[_pos++ < _tokens.Count - 1 ? _pos - 1 : _tokens.Count - 1];

    private bool IsPunct(string p, int ahead = 0) => Peek(ahead) is { Kind: TokenKind.Punct } t && t.Text == p;

    private bool IsIdent(string s, int ahead = 0) => Peek(ahead) is { Kind: TokenKind.Ident } t && t.Text == s;

    private bool TryPunct(string p)
    {
        if (!IsPunct(p)) return false;
        _pos++;
        return true;
    }

    private void ExpectPunct(string p)
    {
        if (!TryPunct(p)) throw Error($"expected '{p}' but found {Peek()}");
    }

    private Token Expect(TokenKind kind)
    {
        if (Peek().Kind != kind) throw Error($"expected {kind.ToString().ToLowerInvariant()} but found {Peek()}");
        return Take();
    }

    private void ExpectIdent(string word)
    {
        if (!IsIdent(word)) throw Error($"expected '{word}' but found {Peek()}");
        _pos++;
    }

    private KilnException Error(string message, Token? at = null)
    {
        var t = at ?? Peek();
        return new KilnException(new Diagnostic(DiagnosticCode.KirSyntax, $"line {t.Line}, column {t.Column}: {message}", _file));
    }

    private Model Model()
    {
        // The model line is optional: a bare graph (as in .kir tests) gets default model fields.
        if (IsIdent("graph")) return new Model(Graph(null)) { SourcePath = _file };
        ExpectIdent("model");
        var fields = new Dictionary<string, Token>();
        while (Peek().Kind == TokenKind.Ident && IsPunct("=", 1))
        {
            var key = Take().Text;
            _pos++;
            fields[key] = Take();
        }
        var metadata = new List<KeyValuePair<string, string>>();
        var opsets = new List<(string, long)>();
        if (IsIdent("opset_import"))
        {
            _pos++;
            do
            {
                var domain = Expect(TokenKind.String).Text;
                ExpectPunct("=");
                opsets.Add((domain, Integer()));
            } while (TryPunct(","));
        }
        while (IsIdent("metadata"))
        {
            _pos++;
            var k = Expect(TokenKind.String).Text;
            ExpectPunct("=");
            metadata.Add(new(k, Expect(TokenKind.String).Text));
        }
        var graph = Graph(null);
        var model = new Model(graph)
        {
            IrVersion = fields.TryGetValue("ir_version", out var ir) ? long.Parse(ir.Text, CultureInfo.InvariantCulture) : 8,
            ProducerName = fields.GetValueOrDefault("producer_name").Text ?? "",
            ProducerVersion = fields.GetValueOrDefault("producer_version").Text ?? "",
            Domain = fields.GetValueOrDefault("domain").Text ?? "",
            ModelVersion = fields.TryGetValue("model_version", out var mv) ? long.Parse(mv.Text, CultureInfo.InvariantCulture) : 0,
            SourcePath = _file,
        };
        foreach (var (d, v) in opsets) model.OpsetImports[d] = v;
        model.Metadata.AddRange(metadata);
        return model;
    }

    private long Integer()
    {
        var neg = TryPunct("-");
        var t = Expect(TokenKind.Number);
        if (!long.TryParse(t.Text, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) throw Error($"expected an integer, found '{t.Text}'", t);
        return neg ? -v : v;
    }

    private string Name(TokenKind kind) => Expect(kind).Text;

    private Graph Graph(Graph? parent)
    {
        ExpectIdent("graph");
        var g = new Graph(Name(TokenKind.ConstRef), parent);
        ExpectPunct("(");
        if (!IsPunct(")"))
            do
            {
                var name = Name(TokenKind.ValueRef);
                ExpectPunct(":");
                g.AddInput(name, Type());
            } while (TryPunct(","));
        ExpectPunct(")");
        ExpectPunct("->");
        ExpectPunct("(");
        var outputs = new List<(string Name, IrType Type, Token At)>();
        if (!IsPunct(")"))
            do
            {
                var at = Peek();
                var name = Name(TokenKind.ValueRef);
                ExpectPunct(":");
                outputs.Add((name, Type(), at));
            } while (TryPunct(","));
        ExpectPunct(")");
        ExpectPunct("{");
        while (!TryPunct("}"))
        {
            if (Peek().Kind == TokenKind.End) throw Error($"graph @{g.Name} is not closed with '}}'");
            if (IsIdent("where") && Peek(1).Kind != TokenKind.Punct) { _pos++; Where(g); }
            else if (IsIdent("default") && Peek(1).Kind == TokenKind.ValueRef) { _pos++; Default(g); }
            else if (IsIdent("const") && Peek(1).Kind == TokenKind.ConstRef) { _pos++; Const(g); }
            else NodeLine(g);
        }
        foreach (var (name, type, at) in outputs)
        {
            var v = g.Lookup(name) ?? throw Error($"graph @{g.Name} returns %{name}, which is not defined", at);
            g.AddOutput(v, type, name);
        }
        return g;
    }

    private void Where(Graph g)
    {
        var sym = Peek().Kind == TokenKind.String ? Take().Text : Expect(TokenKind.Ident).Text;
        ExpectPunct("=");
        g.Bindings[sym] = DimExpr();
    }

    private void Default(Graph g)
    {
        var at = Peek();
        var name = Name(TokenKind.ValueRef);
        var input = g.LookupLocal(name);
        if (input is null || input.Kind != ValueKind.GraphInput) throw Error($"default for %{name}, which is not an input of graph @{g.Name}", at);
        ExpectPunct("=");
        input.Data = Literal(input.Type as TensorType ?? throw Error($"input %{name} with a default must be a tensor", at));
    }

    private void Const(Graph g)
    {
        var at = Peek();
        var name = Name(TokenKind.ConstRef);
        ExpectPunct(":");
        var type = Type() as TensorType ?? throw Error($"constant @{name} must have a tensor type", at);
        ExpectPunct("=");
        DefineOrFail(at, () => g.AddConstant(name, Literal(type)));
    }

    private T DefineOrFail<T>(Token at, Func<T> define)
    {
        try { return define(); }
        catch (KilnException e) { throw Error(e.Diagnostics[0].Message, at); }
    }

    private void NodeLine(Graph g)
    {
        var start = Peek();
        var outNames = new List<string?>();
        var outTypes = new List<IrType>();
        if (TryPunct("(")) ExpectPunct(")");
        else
            do
            {
                if (Peek() is { Kind: TokenKind.Ident, Text: "_" }) { _pos++; outNames.Add(null); outTypes.Add(IrType.Unknown); continue; }
                outNames.Add(Name(TokenKind.ValueRef));
                ExpectPunct(":");
                outTypes.Add(Type());
            } while (TryPunct(","));
        ExpectPunct("=");
        var opTok = Expect(TokenKind.Ident);
        var colon = opTok.Text.LastIndexOf(':');
        var (domain, op) = colon >= 0 ? (opTok.Text[..colon], opTok.Text[(colon + 1)..]) : ("", opTok.Text);
        ExpectPunct("(");
        var inputs = new List<Value?>();
        if (!IsPunct(")"))
            do
            {
                var t = Take();
                if (t is { Kind: TokenKind.Ident, Text: "_" }) { inputs.Add(null); continue; }
                if (t.Kind is not (TokenKind.ValueRef or TokenKind.ConstRef)) throw Error($"expected %value, @constant or _ but found {t}", t);
                var v = g.Lookup(t.Text) ?? throw Error($"{t} is used before it is defined", t);
                inputs.Add(v);
            } while (TryPunct(","));
        ExpectPunct(")");
        var attrs = new Dictionary<string, AttrValue>();
        if (TryPunct("{"))
        {
            if (!IsPunct("}"))
                do
                {
                    var key = Peek().Kind == TokenKind.String ? Take().Text : Expect(TokenKind.Ident).Text;
                    ExpectPunct("=");
                    attrs[key] = Attr(g);
                } while (TryPunct(","));
            ExpectPunct("}");
        }
        string? name = null;
        if (IsIdent("loc") && IsPunct("(", 1))
        {
            _pos += 2;
            name = Expect(TokenKind.String).Text;
            ExpectPunct(")");
        }
        DefineOrFail(start, () => g.AddNode(op, domain, name, inputs.ToArray(), outNames, attrs, outTypes));
    }

    private AttrValue Attr(Graph g)
    {
        var t = Peek();
        if (t.Kind == TokenKind.String) { _pos++; return new StringAttr(t.Text); }
        if (t.Kind == TokenKind.Number || IsPunct("-") || IsIdent("nan") || IsIdent("inf"))
        {
            var (text, isFloat) = NumberText();
            return isFloat ? new FloatAttr(ParseFloat(text)) : new IntAttr(ParseLong(text));
        }
        if (IsIdent("tensor")) return new TensorAttr(TensorLiteral());
        if (IsIdent("graph")) return new GraphAttr(Graph(g));
        if (IsIdent("type")) { _pos++; return new TypeAttr(Type()); }
        if (t.Kind == TokenKind.Ident && IsPunct("[", 1) && IsPunct("]", 2))
        {
            _pos += 3;
            return t.Text switch
            {
                "ints" => new IntsAttr([]), "floats" => new FloatsAttr([]), "strings" => new StringsAttr([]),
                "tensors" => new TensorsAttr([]), "graphs" => new GraphsAttr([]), "types" => new TypesAttr([]),
                _ => throw Error($"unknown empty list kind '{t.Text}'", t),
            };
        }
        if (TryPunct("["))
        {
            if (Peek().Kind == TokenKind.String)
                return new StringsAttr(CommaList(() => Expect(TokenKind.String).Text).ToArray());
            if (IsIdent("tensor")) return new TensorsAttr(CommaList(TensorLiteral).ToArray());
            if (IsIdent("graph")) return new GraphsAttr(CommaList(() => Graph(g)).ToArray());
            if (IsIdent("type")) return new TypesAttr(CommaList(() => { _pos++; return Type(); }).ToArray());
            var items = CommaList(NumberText);
            return items.Any(i => i.IsFloat)
                ? new FloatsAttr(items.Select(i => ParseFloat(i.Text)).ToArray())
                : new IntsAttr(items.Select(i => ParseLong(i.Text)).ToArray());
        }
        throw Error($"expected an attribute value but found {t}");
    }

    /// <summary>Items up to and including the closing ']' (the '[' is already taken).</summary>
    private List<T> CommaList<T>(Func<T> item)
    {
        var list = new List<T>();
        do list.Add(item()); while (TryPunct(","));
        ExpectPunct("]");
        return list;
    }

    private (string Text, bool IsFloat) NumberText()
    {
        var neg = TryPunct("-") ? "-" : "";
        var t = Take();
        if (t.Kind == TokenKind.Ident && t.Text is "nan" or "inf") return (neg + t.Text, true);
        if (t.Kind != TokenKind.Number) throw Error($"expected a number but found {t}", t);
        return (neg + t.Text, t.Text.IndexOfAny(['.', 'e', 'E']) >= 0);
    }

    private long ParseLong(string s) =>
        long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : throw Error($"'{s}' is not a 64-bit integer");

    private static float ParseFloat(string s) => s switch
    {
        "nan" or "-nan" => float.NaN,
        "inf" => float.PositiveInfinity,
        "-inf" => float.NegativeInfinity,
        _ => float.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture),
    };

    private static double ParseDouble(string s) => s switch
    {
        "nan" or "-nan" => double.NaN,
        "inf" => double.PositiveInfinity,
        "-inf" => double.NegativeInfinity,
        _ => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture),
    };

    private TensorData TensorLiteral()
    {
        ExpectIdent("tensor");
        var at = Peek();
        var type = Type() as TensorType ?? throw Error("tensor attribute needs a tensor type", at);
        return Literal(type);
    }

    private IrType Type()
    {
        var t = Peek();
        if (TryPunct("?")) return IrType.Unknown;
        if (t.Kind != TokenKind.Ident) throw Error($"expected a type but found {t}");
        _pos++;
        if (t.Text is "seq" or "optional")
        {
            ExpectPunct("(");
            var inner = Type();
            ExpectPunct(")");
            return t.Text == "seq" ? new SequenceType(inner) : new OptionalType(inner);
        }
        if (!DTypes.TryParse(t.Text, out var elem)) throw Error($"unknown element type '{t.Text}'", t);
        ExpectPunct("[");
        if (TryPunct("*")) { ExpectPunct("]"); return new TensorType(elem, null); }
        var dims = new List<Dim>();
        if (!IsPunct("]"))
            do dims.Add(DimExpr()); while (TryPunct(","));
        ExpectPunct("]");
        return new TensorType(elem, new Shape(dims));
    }

    private Dim DimExpr()
    {
        var d = DimTerm(negate: TryPunct("-"));
        while (true)
        {
            if (TryPunct("+")) d += DimTerm(false);
            else if (TryPunct("-")) d += DimTerm(true);
            else return d;
        }
    }

    private Dim DimTerm(bool negate)
    {
        var d = DimFactor();
        while (true)
        {
            if (TryPunct("*")) d *= DimFactor();
            else if (TryPunct("/"))
            {
                var at = Peek();
                if (DimFactor().Value is not { } by || by <= 0) throw Error("a dim is divided only by a positive number", at);
                d = Dim.FloorDivide(d, by);
            }
            else return negate ? -d : d;
        }
    }

    private Dim Parenthesized()
    {
        var d = DimExpr();
        ExpectPunct(")");
        return d;
    }

    private Dim DimFactor()
    {
        var t = Take();
        return t.Kind switch
        {
            TokenKind.Number => Dim.Const(ParseLong(t.Text)),
            TokenKind.Ident or TokenKind.String => Dim.Symbol(t.Text),
            TokenKind.Punct when t.Text == "?" => Dim.Unknown,
            TokenKind.Punct when t.Text == "(" => Parenthesized(),
            _ => throw Error($"expected a dim but found {t}", t),
        };
    }

    private TensorData Literal(TensorType type)
    {
        var at = Peek();
        var dims = type.Shape?.ToConcrete() ?? throw Error($"constant type {KirPrinter.Type(type)} must have known dims", at);
        var count = dims.Aggregate(1L, (a, b) => a * b);
        if (IsIdent("weight"))
        {
            _pos++;
            var hash = Expect(TokenKind.Hash);
            if (_weights is null) throw new KilnException(new Diagnostic(DiagnosticCode.KirWeightMismatch, $"line {hash.Line}: weight #{hash.Text} is referenced but no weights file was given", _file));
            var data = _weights.Find(hash.Text, type)
                ?? throw new KilnException(new Diagnostic(DiagnosticCode.KirWeightMismatch, $"line {hash.Line}: weight #{hash.Text} ({KirPrinter.Type(type)}) is not in the weights file", _file));
            if (data.Elem != type.Elem || !data.Dims.SequenceEqual(dims))
                throw new KilnException(new Diagnostic(DiagnosticCode.KirWeightMismatch, $"line {hash.Line}: weight #{hash.Text} is {KirPrinter.Type(data.Type)} in the weights file, not {KirPrinter.Type(type)}", _file));
            return data;
        }
        if (IsIdent("hex") && Peek(1).Kind == TokenKind.String)
        {
            _pos++;
            var s = Take();
            var bytes = Convert.FromHexString(s.Text);
            if (bytes.Length != type.Elem.ByteCount(count)) throw Error($"hex literal has {bytes.Length} bytes, {KirPrinter.Type(type)} needs {type.Elem.ByteCount(count)}", s);
            return new MemoryTensorData(type.Elem, dims, bytes);
        }
        if (type.Elem == DType.String)
        {
            List<byte[]> strings = [];
            if (IsIdent("strings") && IsPunct("[", 1)) { _pos += 2; ExpectPunct("]"); }
            else
            {
                ExpectPunct("[");
                strings = CommaList(() => Encoding.UTF8.GetBytes(Expect(TokenKind.String).Text));
            }
            if (strings.Count != count) throw Error($"literal has {strings.Count} strings, {KirPrinter.Type(type)} needs {count}", at);
            return new StringTensorData(dims, strings);
        }
        ExpectPunct("[");
        var items = new List<string>();
        if (!TryPunct("]"))
            items = CommaList(() => IsIdent("true") || IsIdent("false") ? Take().Text : NumberText().Text);
        if (items.Count != count) throw Error($"literal has {items.Count} values, {KirPrinter.Type(type)} needs {count}", at);
        return new MemoryTensorData(type.Elem, dims, Encode(type.Elem, items));
    }

    private byte[] Encode(DType elem, List<string> items)
    {
        byte[] Pack<T>(Func<string, T> f) where T : unmanaged => MemoryMarshal.AsBytes(items.Select(f).ToArray().AsSpan()).ToArray();
        return elem switch
        {
            DType.F32 => Pack(ParseFloat),
            DType.F64 => Pack(ParseDouble),
            DType.F16 => Pack(s => (Half)ParseFloat(s)),
            DType.BF16 => Pack(s => (ushort)(BitConverter.SingleToUInt32Bits(ParseFloat(s)) >> 16)),
            DType.I64 => Pack(ParseLong),
            DType.I32 => Pack(s => checked((int)ParseLong(s))),
            DType.I16 => Pack(s => checked((short)ParseLong(s))),
            DType.I8 => Pack(s => checked((sbyte)ParseLong(s))),
            DType.U8 => Pack(s => checked((byte)ParseLong(s))),
            DType.U16 => Pack(s => checked((ushort)ParseLong(s))),
            DType.U32 => Pack(s => checked((uint)ParseLong(s))),
            DType.U64 => Pack(s => ulong.Parse(s, CultureInfo.InvariantCulture)),
            DType.Bool => Pack(s => s == "true" ? (byte)1 : s == "false" ? (byte)0 : throw Error($"'{s}' is not a bool")),
            _ => throw Error($"{elem.Name()} constants are written as hex\"…\""),
        };
    }
}
