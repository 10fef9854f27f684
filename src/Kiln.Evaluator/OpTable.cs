using Kiln.Ir;
using Kiln.Runtime;

namespace Kiln.Evaluator;

/// <summary>
/// Maps each op (by name, <c>domain:Name</c> outside the default domain) to its evaluator entry: read attributes
/// and inputs from the context, call the Kiln.Runtime kernel, set outputs. The entries are grouped by op family
/// in Ops/*.cs, matching Kiln.Ir/Ops and Kiln.Runtime/Kernels.
/// </summary>
internal static partial class OpTable
{
    private static readonly Dictionary<string, Action<OpContext>> Entries = Build();

    private static Dictionary<string, Action<OpContext>> Build()
    {
        var d = new Dictionary<string, Action<OpContext>>(StringComparer.Ordinal);
        RegisterElementwise(d);
        RegisterShape(d);
        RegisterReduction(d);
        RegisterNeural(d);
        RegisterControlFlow(d);
        RegisterMisc(d);
        RegisterExtended(d);
        return d;
    }

    private static string Key(Node n) => n.Domain.Length == 0 ? n.Op : n.Domain + ":" + n.Op;

    public static bool Has(Node n) => Entries.ContainsKey(Key(n));

    public static IEnumerable<string> Supported => Entries.Keys;

    public static void Run(OpContext c) => Entries[Key(c.Node)](c);
}
