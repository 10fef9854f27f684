namespace Kiln.Ir.Ops;

/// <summary>All ops Kiln knows, by domain and name. The default instance holds the ONNX ops the op files register.</summary>
public sealed class OpRegistry
{
    /// <summary>The ONNX opset whose semantics Kiln's canonical op forms follow, and that export writes.</summary>
    public const int CanonicalOpset = 21;

    /// <summary>The oldest and newest default-domain opsets import accepts.</summary>
    public const int MinOpset = 1;
    public const int MaxOpset = 21;

    private readonly Dictionary<(string Domain, string Name), OpDef> _ops = [];

    public static OpRegistry Default { get; } = CreateDefault();

    private static OpRegistry CreateDefault()
    {
        var r = new OpRegistry();
        ElementwiseOps.Register(r);
        ActivationOps.Register(r);
        ReductionOps.Register(r);
        ShapeOps.Register(r);
        IndexingOps.Register(r);
        MatMulOps.Register(r);
        ConvOps.Register(r);
        PoolingOps.Register(r);
        NormalizationOps.Register(r);
        RecurrentOps.Register(r);
        ControlFlowOps.Register(r);
        SequenceOps.Register(r);
        QuantizationOps.Register(r);
        MiscOps.Register(r);
        FusedOps.Register(r);
        CompressedOps.Register(r);
        // Known to import and shape inference, with no runtime kernel yet: a model using one imports and compiles
        // (its shapes are inferred), and running it is refused naming the op (KILN0005).
        r.MarkWithoutKernel("LpNormalization", "MaxRoiPool", "RoiAlign", "Upsample", "RandomUniform", "RandomNormal", "RandomUniformLike",
            "RandomNormalLike", "Bernoulli", "Multinomial", "TfIdfVectorizer", "DFT", "STFT", "MelWeightMatrix");
        return r;
    }

    private readonly HashSet<(string Domain, string Name)> _withoutKernel = [];

    /// <summary>Marks default-domain ops that have no runtime kernel (a test keeps the marks and the operator table in step).</summary>
    public void MarkWithoutKernel(params string[] names)
    {
        foreach (var n in names)
            if (!_ops.ContainsKey(("", n)) || !_withoutKernel.Add(("", n))) throw new InvalidOperationException($"op {n} is not registered, or marked twice");
    }

    /// <summary>Whether the runtime is meant to have a kernel for the op (false: marked with <see cref="MarkWithoutKernel"/>).</summary>
    public bool HasKernel(OpDef def) => !_withoutKernel.Contains((def.Domain, def.Name));

    public IEnumerable<OpDef> All => _ops.Values;

    public OpDef? Find(string domain, string name) =>
        _ops.GetValueOrDefault((NormalizeDomain(domain), name));

    public static string NormalizeDomain(string domain) => domain == "ai.onnx" ? "" : domain;

    /// <summary>Registers an op from a compact signature: inputs "A, B?", outputs "Y", attributes "axis:int=0".</summary>
    public OpDef Add(string name, string inputs, string outputs, string attributes, ShapeRule rule,
        OpsetAdapter? adapter = null, string domain = "", int since = 1)
    {
        var def = new OpDef(name, domain, OpDef.ParseParams(inputs), OpDef.ParseParams(outputs), OpDef.ParseAttrs(attributes), rule, adapter, since);
        if (!_ops.TryAdd((domain, name), def)) throw new InvalidOperationException($"op {def} registered twice");
        return def;
    }
}
