namespace Kiln.Ir;

/// <summary>An attribute value. The kinds mirror ONNX's attribute types.</summary>
public abstract record AttrValue
{
    public abstract AttrKind Kind { get; }
}

public enum AttrKind { Int, Float, String, Tensor, Graph, Type, Ints, Floats, Strings, Tensors, Graphs, Types }

public sealed record IntAttr(long Value) : AttrValue { public override AttrKind Kind => AttrKind.Int; }

public sealed record FloatAttr(float Value) : AttrValue { public override AttrKind Kind => AttrKind.Float; }

public sealed record StringAttr(string Value) : AttrValue { public override AttrKind Kind => AttrKind.String; }

public sealed record TensorAttr(TensorData Value) : AttrValue { public override AttrKind Kind => AttrKind.Tensor; }

public sealed record GraphAttr(Graph Value) : AttrValue { public override AttrKind Kind => AttrKind.Graph; }

public sealed record TypeAttr(IrType Value) : AttrValue { public override AttrKind Kind => AttrKind.Type; }

public sealed record IntsAttr(long[] Value) : AttrValue { public override AttrKind Kind => AttrKind.Ints; }

public sealed record FloatsAttr(float[] Value) : AttrValue { public override AttrKind Kind => AttrKind.Floats; }

public sealed record StringsAttr(string[] Value) : AttrValue { public override AttrKind Kind => AttrKind.Strings; }

public sealed record TensorsAttr(TensorData[] Value) : AttrValue { public override AttrKind Kind => AttrKind.Tensors; }

public sealed record GraphsAttr(Graph[] Value) : AttrValue { public override AttrKind Kind => AttrKind.Graphs; }

public sealed record TypesAttr(IrType[] Value) : AttrValue { public override AttrKind Kind => AttrKind.Types; }
