using System.Globalization;
using Kiln.Ir.Inference;

namespace Kiln.Ir.Ops;

/// <summary>An input or output of an op: optional ones may be absent; a variadic one takes all remaining positions.</summary>
public sealed record ParamDef(string Name, bool Optional, bool Variadic, int MinCount = 1);

/// <summary>An attribute of an op, with its kind and default (null when it has none).</summary>
public sealed record AttrDef(string Name, AttrKind Kind, AttrValue? Default, bool Required);

/// <summary>
/// What planning may assume about an op without knowing its name: the memory planner, elementwise chains and the
/// decoder convention read these, so a new op joins them by declaring a trait, not by editing the planner.
/// </summary>
[Flags]
public enum OpTraits
{
    None = 0,

    /// <summary>Each output element depends only on the input elements at the same (broadcast) position.</summary>
    Elementwise = 1,

    /// <summary>The output is input 0's elements in the same order under another shape: it can share input 0's storage.</summary>
    View = 2,

    /// <summary>The output is input 0 followed by the other inputs along the axis given by the attribute <c>axis</c>.</summary>
    AppendsAlongAxis = 4,

    /// <summary>Inputs 1 and 2 are attention keys and values, readable in place from a KV cache (attribute <c>kv_bits</c> = 8: an int8 cache).</summary>
    ReadsKeyValueCache = 8,

    /// <summary>Row r of the output (all axes but the last) depends only on row r of input 0: a product with a weight.</summary>
    RowIndependent = 16,
}

/// <summary>Computes output types (and, for shape arithmetic, output values) of one node.</summary>
public delegate void ShapeRule(InferenceContext context);

/// <summary>Rewrites an ONNX node of an older opset into the op's canonical form (the latest semantics Kiln uses).</summary>
public delegate void OpsetAdapter(AdapterContext context);

/// <summary>
/// The definition of one op: its signature, attributes with defaults, shape/type rule and opset adapter.
/// Kiln's IR holds every op in one canonical form (the ONNX opset given by <see cref="OpRegistry.CanonicalOpset"/>);
/// the adapter turns older forms into it at import.
/// </summary>
public sealed class OpDef
{
    public OpDef(string name, string domain, IReadOnlyList<ParamDef> inputs, IReadOnlyList<ParamDef> outputs,
        IReadOnlyList<AttrDef> attributes, ShapeRule rule, OpsetAdapter? adapter, int sinceVersion)
    {
        Name = name;
        Domain = domain;
        Inputs = inputs;
        Outputs = outputs;
        Attributes = attributes;
        Rule = rule;
        Adapter = adapter;
        SinceVersion = sinceVersion;
    }

    public string Name { get; }

    /// <summary>What planning may assume about the op (declared beside its definition with <see cref="With"/>).</summary>
    public OpTraits Traits { get; private set; }

    /// <summary>Adds traits to the definition (at registration).</summary>
    internal OpDef With(OpTraits traits)
    {
        Traits |= traits;
        return this;
    }

    public string Domain { get; }

    public IReadOnlyList<ParamDef> Inputs { get; }

    public IReadOnlyList<ParamDef> Outputs { get; }

    public IReadOnlyList<AttrDef> Attributes { get; }

    public ShapeRule Rule { get; }

    public OpsetAdapter? Adapter { get; }

    /// <summary>The first opset version of the op's domain that defines it.</summary>
    public int SinceVersion { get; }

    public AttrDef? FindAttribute(string name) => Attributes.FirstOrDefault(a => a.Name == name);

    public int MinInputs => CountMin(Inputs);

    public int MaxInputs => Inputs.Any(p => p.Variadic) ? int.MaxValue : Inputs.Count;

    public int MinOutputs => CountMin(Outputs);

    public int MaxOutputs => Outputs.Any(p => p.Variadic) ? int.MaxValue : Outputs.Count;

    private static int CountMin(IReadOnlyList<ParamDef> ps)
    {
        // Everything up to the last required parameter must be present.
        var last = -1;
        for (var i = 0; i < ps.Count; i++)
            if (!ps[i].Optional) last = i;
        var min = last + 1;
        if (last >= 0 && ps[last].Variadic) min += ps[last].MinCount - 1;
        return min;
    }

    /// <summary>Parses "X, W, B?" (? optional, * variadic, *? variadic possibly empty).</summary>
    internal static IReadOnlyList<ParamDef> ParseParams(string spec) =>
        spec.Length == 0 ? [] :
        spec.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(p =>
        {
            if (p.EndsWith("*?")) return new ParamDef(p[..^2], Optional: true, Variadic: true, MinCount: 0);
            if (p.EndsWith('*')) return new ParamDef(p[..^1], Optional: false, Variadic: true);
            if (p.EndsWith('?')) return new ParamDef(p[..^1], Optional: true, Variadic: false);
            return new ParamDef(p, false, false);
        }).ToList();

    /// <summary>Parses "axis:int=0, perm:ints?, to:int!" (= default, ? optional without default, ! required).</summary>
    internal static IReadOnlyList<AttrDef> ParseAttrs(string spec) =>
        spec.Length == 0 ? [] :
        SplitTop(spec).Select(a =>
        {
            var colon = a.IndexOf(':');
            var name = a[..colon].Trim();
            var rest = a[(colon + 1)..].Trim();
            string? dflt = null;
            var required = false;
            var eq = rest.IndexOf('=');
            if (eq >= 0) { dflt = rest[(eq + 1)..].Trim(); rest = rest[..eq].Trim(); }
            else if (rest.EndsWith('!')) { required = true; rest = rest[..^1]; }
            else if (rest.EndsWith('?')) rest = rest[..^1];
            var kind = rest switch
            {
                "int" => AttrKind.Int, "float" => AttrKind.Float, "string" => AttrKind.String, "tensor" => AttrKind.Tensor,
                "graph" => AttrKind.Graph, "type" => AttrKind.Type, "ints" => AttrKind.Ints, "floats" => AttrKind.Floats,
                "strings" => AttrKind.Strings, "tensors" => AttrKind.Tensors, "graphs" => AttrKind.Graphs, "types" => AttrKind.Types,
                _ => throw new ArgumentException($"bad attribute kind '{rest}' in '{a}'"),
            };
            AttrValue? value = dflt is null ? null : kind switch
            {
                AttrKind.Int => new IntAttr(long.Parse(dflt, CultureInfo.InvariantCulture)),
                AttrKind.Float => new FloatAttr(float.Parse(dflt, CultureInfo.InvariantCulture)),
                AttrKind.String => new StringAttr(dflt.Trim('"')),
                AttrKind.Ints => new IntsAttr(dflt.Trim('[', ']').Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => long.Parse(s.Trim(), CultureInfo.InvariantCulture)).ToArray()),
                AttrKind.Floats => new FloatsAttr(dflt.Trim('[', ']').Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => float.Parse(s.Trim(), CultureInfo.InvariantCulture)).ToArray()),
                AttrKind.Strings => new StringsAttr(dflt.Trim('[', ']').Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => s.Trim().Trim('"')).ToArray()),
                _ => throw new ArgumentException($"no default syntax for {kind}"),
            };
            return new AttrDef(name, kind, value, required);
        }).ToList();

    private static IEnumerable<string> SplitTop(string s)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '[') depth++;
            else if (s[i] == ']') depth--;
            else if (s[i] == ',' && depth == 0)
            {
                yield return s[start..i].Trim();
                start = i + 1;
            }
        }
        if (start < s.Length) yield return s[start..].Trim();
    }

    public override string ToString() => Domain.Length == 0 ? Name : $"{Domain}:{Name}";
}
