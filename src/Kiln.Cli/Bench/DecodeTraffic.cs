using Kiln.Ir;
using Kiln.Runtime.Operators;

namespace Kiln.Cli.Bench;

/// <summary>
/// The weight bytes one decode step reads from a graph's constants: every constant in full, except a table read
/// only by lookups (an untied embedding: <c>Gather</c> on axis 0, <c>kiln:QuantizedGather</c>), of which one row.
/// A tied embedding is also the classifier's weight, so it counts in full. Counted on each engine's own graph:
/// ONNX Runtime reads the model's float weights even when Kiln reads compressed ones.
/// </summary>
public static class DecodeTraffic
{
    public static long BytesPerToken(Graph graph)
    {
        long bytes = 0;
        foreach (var c in graph.AllGraphs().SelectMany(g => g.Constants))
        {
            if (c.Data is not { } data || data.Elem == DType.String || data.ByteLength == 0) continue;
            var lookupOnly = c.Uses.Count > 0 && data.Dims.Length >= 1 && data.Dims[0] > 0 && c.Uses.All(IsLookupTable);
            bytes += lookupOnly ? data.ByteLength / data.Dims[0] : data.ByteLength;
        }
        return bytes;
    }

    private static bool IsLookupTable(Use use) => use.Node.QualifiedOp switch
    {
        "Gather" => use.Index == 0 && use.Node.AttrInt("axis") == 0,
        KilnOp.Qualified.QuantizedGather => use.Index <= 2,
        _ => false,
    };
}
