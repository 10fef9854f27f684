using Kiln.Ir.Ops;
using Kiln.Runtime.Operators;

namespace Kiln.Ir.Tests;

/// <summary>The op registry and the runtime's operator table describe the same ops.</summary>
public sealed class OpTablesTests
{
    [Fact]
    public void Every_registry_op_has_an_operator_entry_unless_marked_and_every_entry_is_a_registry_op()
    {
        var registry = OpRegistry.Default;
        var keys = registry.All.ToDictionary(d => OperatorTable.Key(d.Domain, d.Name));
        var missing = registry.All.Where(d => registry.HasKernel(d) && !OperatorTable.Has(OperatorTable.Key(d.Domain, d.Name))).Select(d => d.ToString()).ToList();
        Assert.True(missing.Count == 0, "registry ops with no operator entry (add one, or mark them without kernel): " + string.Join(", ", missing));
        var stale = registry.All.Where(d => !registry.HasKernel(d) && OperatorTable.Has(OperatorTable.Key(d.Domain, d.Name))).Select(d => d.ToString()).ToList();
        Assert.True(stale.Count == 0, "ops marked without kernel that have one: " + string.Join(", ", stale));
        var unknown = OperatorTable.Supported.Where(k => !keys.ContainsKey(k)).ToList();
        Assert.True(unknown.Count == 0, "operator entries no registry op reaches: " + string.Join(", ", unknown));
    }

    [Fact]
    public void Kiln_op_names_are_the_registry_s()
    {
        var kiln = OpRegistry.Default.All.Where(d => d.Domain == KilnOp.Domain).Select(d => d.Name).Order(StringComparer.Ordinal).ToList();
        var constants = typeof(KilnOp).GetFields().Where(f => f.IsLiteral && f.Name != nameof(KilnOp.Domain)).Select(f => (string)f.GetRawConstantValue()!).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(constants, kiln);
        var qualified = typeof(KilnOp.Qualified).GetFields().Select(f => (string)f.GetRawConstantValue()!).Order(StringComparer.Ordinal);
        Assert.Equal(kiln.Select(n => KilnOp.Domain + ":" + n), qualified);
    }
}
