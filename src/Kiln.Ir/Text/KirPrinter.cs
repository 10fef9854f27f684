using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Kiln.Ir;

/// <summary>
/// Prints a model or graph as .kir text (grammar: docs/kir-format.md). One node per line, every value typed.
/// Constants with more than <see cref="InlineLimit"/> elements print as a reference by content hash
/// (<c>weight #1a2b…</c>) that the parser resolves against a weights file.
/// </summary>
public sealed class KirPrinter
{
    public const int InlineLimit = 16;

    private readonly StringBuilder _sb = new();

    public static string Print(Model model)
    {
        var p = new KirPrinter();
        p.PrintModel(model);
        return p._sb.ToString();
    }

    /// <summary>
    /// Writes the model as .kir text to <paramref name="path"/> and its large constants to the weights file beside it
    /// (<see cref="WeightFile.PathFor"/>; a stale one is removed); returns how many tensors that file holds.
    /// </summary>
    public static int WriteFile(Model model, string path)
    {
        File.WriteAllText(path, Print(model));
        var weights = ReferencedWeights(model.Graph).ToList();
        var weightsPath = WeightFile.PathFor(path);
        if (weights.Count > 0) WeightFile.Write(weightsPath, weights);
        else if (File.Exists(weightsPath)) File.Delete(weightsPath);
        return weights.Count;
    }

    public static string Print(Graph graph)
    {
        var p = new KirPrinter();
        p.PrintGraph(graph, 0);
        p._sb.Append('\n');
        return p._sb.ToString();
    }

    /// <summary>Constants that print as weight references (they go to the weights file).</summary>
    public static IEnumerable<TensorData> ReferencedWeights(Graph graph) =>
        graph.AllGraphs().SelectMany(g => g.Constants.Select(c => c.Data!).Concat(g.Inputs.Select(i => i.Data).OfType<TensorData>())
            .Concat(g.Nodes.SelectMany(n => n.Attributes.Values).SelectMany(a => a switch
            {
                TensorAttr t => [t.Value],
                TensorsAttr ts => ts.Value,
                _ => Array.Empty<TensorData>(),
            })))
        .Where(IsReference);

    public static bool IsReference(TensorData d) => d.Elem != DType.String && d.ElementCount > InlineLimit;

    private void PrintModel(Model m)
    {
        _sb.Append(CultureInfo.InvariantCulture, $"model ir_version={m.IrVersion} producer_name={KirEscaping.Quote(m.ProducerName)} producer_version={KirEscaping.Quote(m.ProducerVersion)} domain={KirEscaping.Quote(m.Domain)} model_version={m.ModelVersion}\n");
        if (m.OpsetImports.Count > 0)
            _sb.Append("opset_import ").Append(string.Join(", ", m.OpsetImports.Select(kv => $"{KirEscaping.Quote(kv.Key)}={kv.Value.ToString(CultureInfo.InvariantCulture)}"))).Append('\n');
        foreach (var (k, v) in m.Metadata)
            _sb.Append("metadata ").Append(KirEscaping.Quote(k)).Append('=').Append(KirEscaping.Quote(v)).Append('\n');
        PrintGraph(m.Graph, 0);
        _sb.Append('\n');
    }

    private void Indent(int depth) => _sb.Append(' ', depth * 2);

    private void PrintGraph(Graph g, int depth)
    {
        _sb.Append("graph @").Append(KirEscaping.Name(g.Name)).Append('(');
        _sb.Append(string.Join(", ", g.Inputs.Select(v => $"%{KirEscaping.Name(v.Name)}: {Type(v.Type)}")));
        _sb.Append(") -> (");
        _sb.Append(string.Join(", ", g.Outputs.Select(o => $"%{KirEscaping.Name(o.Name)}: {Type(o.DeclaredType)}")));
        _sb.Append(") {\n");
        foreach (var (sym, dim) in g.Bindings)
        {
            Indent(depth + 1);
            _sb.Append("where ").Append(Dim.QuoteSymbol(sym)).Append(" = ").Append(dim).Append('\n');
        }
        foreach (var input in g.Inputs.Where(i => i.Data is not null))
        {
            Indent(depth + 1);
            _sb.Append("default %").Append(KirEscaping.Name(input.Name)).Append(" = ");
            Literal(input.Data!);
            _sb.Append('\n');
        }
        foreach (var c in g.Constants)
        {
            Indent(depth + 1);
            _sb.Append("const @").Append(KirEscaping.Name(c.Name)).Append(": ").Append(Type(c.Type)).Append(" = ");
            Literal(c.Data!);
            _sb.Append('\n');
        }
        foreach (var n in g.Nodes)
        {
            Indent(depth + 1);
            PrintNode(n, depth + 1);
            _sb.Append('\n');
        }
        Indent(depth);
        _sb.Append('}');
    }

    private void PrintNode(Node n, int depth)
    {
        if (n.Outputs.Length == 0) _sb.Append("()");
        _sb.Append(string.Join(", ", n.Outputs.Select(o => o is null ? "_" : $"%{KirEscaping.Name(o.Name)}: {Type(o.Type)}")));
        _sb.Append(" = ").Append(n.Domain.Length == 0 ? n.Op : $"{n.Domain}:{n.Op}").Append('(');
        _sb.Append(string.Join(", ", n.Inputs.Select(Ref)));
        _sb.Append(')');
        if (n.Attributes.Count > 0)
        {
            _sb.Append(" {");
            var first = true;
            foreach (var (name, value) in n.Attributes)
            {
                if (!first) _sb.Append(", ");
                first = false;
                _sb.Append(KirEscaping.Name(name)).Append('=');
                Attr(value, depth);
            }
            _sb.Append('}');
        }
        if (n.Name is not null) _sb.Append(" loc(").Append(KirEscaping.Quote(n.Name)).Append(')');
    }

    private static string Ref(Value? v) => v is null ? "_" : (v.Kind == ValueKind.Constant ? "@" : "%") + KirEscaping.Name(v.Name);

    public static string Type(IrType t) => t switch
    {
        TensorType tt => tt.Elem.Name() + (tt.Shape is null ? "[*]" : "[" + string.Join(", ", tt.Shape.Dims.Select(d => d.ToString())) + "]"),
        SequenceType s => $"seq({Type(s.Element)})",
        OptionalType o => $"optional({Type(o.Element)})",
        _ => "?",
    };

    private void Attr(AttrValue a, int depth)
    {
        switch (a)
        {
            case IntAttr i: _sb.Append(i.Value.ToString(CultureInfo.InvariantCulture)); break;
            case FloatAttr f: _sb.Append(KirEscaping.Float(f.Value, single: true)); break;
            case StringAttr s: _sb.Append(KirEscaping.Quote(s.Value)); break;
            case IntsAttr i: List("ints", i.Value, v => _sb.Append(v.ToString(CultureInfo.InvariantCulture))); break;
            case FloatsAttr f: List("floats", f.Value, v => _sb.Append(KirEscaping.Float(v, single: true))); break;
            case StringsAttr s: List("strings", s.Value, v => _sb.Append(KirEscaping.Quote(v))); break;
            case TensorAttr t: TensorValue(t.Value); break;
            case TensorsAttr ts: List("tensors", ts.Value, TensorValue); break;
            case GraphAttr g: PrintGraph(g.Value, depth); break;
            case GraphsAttr gs: List("graphs", gs.Value, g => PrintGraph(g, depth)); break;
            case TypeAttr t: _sb.Append("type ").Append(Type(t.Value)); break;
            case TypesAttr ts: List("types", ts.Value, t => _sb.Append("type ").Append(Type(t))); break;
            default: throw new InvalidOperationException($"unknown attribute kind {a.Kind}");
        }
    }

    private void List<T>(string kind, IReadOnlyList<T> items, Action<T> each)
    {
        if (items.Count == 0) { _sb.Append(kind).Append("[]"); return; }
        _sb.Append('[');
        for (var i = 0; i < items.Count; i++)
        {
            if (i > 0) _sb.Append(", ");
            each(items[i]);
        }
        _sb.Append(']');
    }

    private void TensorValue(TensorData t)
    {
        _sb.Append("tensor ").Append(Type(t.Type)).Append(' ');
        Literal(t);
    }

    /// <summary>Tensor contents: a flat row-major list, a hex string for packed types, or a weight reference.</summary>
    private void Literal(TensorData d)
    {
        if (IsReference(d))
        {
            _sb.Append("weight #").Append(d.ContentHash);
            return;
        }
        if (d is StringTensorData s)
        {
            List("strings", s.AsStrings.ToList(), v => _sb.Append(KirEscaping.Quote(v)));
            return;
        }
        var bytes = d.Bytes;
        switch (d.Elem)
        {
            case DType.F32: Items(MemoryMarshal.Cast<byte, float>(bytes).ToArray(), v => KirEscaping.Float(v, true)); break;
            case DType.F64: Items(MemoryMarshal.Cast<byte, double>(bytes).ToArray(), v => KirEscaping.Float(v, false)); break;
            case DType.F16: Items(MemoryMarshal.Cast<byte, Half>(bytes).ToArray(), v => KirEscaping.Float((float)v, true)); break;
            case DType.BF16: Items(MemoryMarshal.Cast<byte, ushort>(bytes).ToArray(), v => KirEscaping.Float(BitConverter.Int32BitsToSingle(v << 16), true)); break;
            case DType.I64: Items(MemoryMarshal.Cast<byte, long>(bytes).ToArray(), Int); break;
            case DType.I32: Items(MemoryMarshal.Cast<byte, int>(bytes).ToArray(), v => Int(v)); break;
            case DType.I16: Items(MemoryMarshal.Cast<byte, short>(bytes).ToArray(), v => Int(v)); break;
            case DType.I8: Items(MemoryMarshal.Cast<byte, sbyte>(bytes).ToArray(), v => Int(v)); break;
            case DType.U8: Items(bytes.ToArray(), v => Int(v)); break;
            case DType.U16: Items(MemoryMarshal.Cast<byte, ushort>(bytes).ToArray(), v => Int(v)); break;
            case DType.U32: Items(MemoryMarshal.Cast<byte, uint>(bytes).ToArray(), v => Int(v)); break;
            case DType.U64: Items(MemoryMarshal.Cast<byte, ulong>(bytes).ToArray(), v => v.ToString(CultureInfo.InvariantCulture)); break;
            case DType.Bool: Items(bytes.ToArray(), v => v != 0 ? "true" : "false"); break;
            default: _sb.Append("hex\"").Append(Convert.ToHexStringLower(bytes)).Append('"'); break;
        }
    }

    private static string Int(long v) => v.ToString(CultureInfo.InvariantCulture);

    private void Items<T>(T[] values, Func<T, string> format)
    {
        _sb.Append('[');
        for (var i = 0; i < values.Length; i++)
        {
            if (i > 0) _sb.Append(", ");
            _sb.Append(format(values[i]));
        }
        _sb.Append(']');
    }
}
