namespace Kiln.Runtime.Operators;

/// <summary>
/// Every operator by name (<c>Op</c>, or <c>domain:Op</c> outside the default ONNX domain): read attributes and
/// inputs from the context, call the kernel, set outputs. The evaluator dispatches IR nodes here and generated code
/// calls the same entries for ops it does not specialize, so an op's semantics are written once. Entries are grouped
/// by op family in Operators/*.cs, matching Kiln.Ir/Ops and Kernels/.
/// </summary>
public static partial class OperatorTable
{
    private static readonly Dictionary<string, Action<OpContext>> Entries = Build();

    private static Dictionary<string, Action<OpContext>> Build()
    {
        var d = new Dictionary<string, Action<OpContext>>(StringComparer.Ordinal);
        RegisterElementwise(d);
        RegisterActivation(d);
        RegisterShape(d);
        RegisterIndexing(d);
        RegisterReduction(d);
        RegisterMatMul(d);
        RegisterConv(d);
        RegisterPooling(d);
        RegisterNormalization(d);
        RegisterRecurrent(d);
        RegisterControlFlow(d);
        RegisterSequence(d);
        RegisterQuantization(d);
        RegisterMisc(d);
        RegisterFused(d);
        return d;
    }

    public static string Key(string domain, string op) => domain.Length == 0 ? op : domain + ":" + op;

    public static bool Has(string key) => Entries.ContainsKey(key);

    public static IEnumerable<string> Supported => Entries.Keys;

    /// <summary>The op an entry belongs to (for profiles).</summary>
    public static string NameOf(Action<OpContext> entry) => Entries.FirstOrDefault(e => e.Value == entry).Key ?? "?";

    /// <summary>The entry for an op; generated code looks it up once, at class initialization.</summary>
    public static Action<OpContext> Get(string key) =>
        Entries.TryGetValue(key, out var e) ? e : throw new KernelException($"the runtime has no operator {key}");
}
