namespace Kiln.Ir.Diagnostics;

/// <summary>Every diagnostic Kiln can report, with its code. docs/diagnostics.md lists the same table; a test keeps them in step.</summary>
public enum DiagnosticCode
{
    /// <summary>The file does not exist or cannot be read.</summary>
    FileNotReadable = 1,
    /// <summary>The file is empty.</summary>
    EmptyFile = 2,
    /// <summary>The file is not a valid ONNX protobuf (truncated, corrupt, or another format).</summary>
    MalformedProtobuf = 3,
    /// <summary>The model has no graph, or required model fields are missing or invalid.</summary>
    InvalidModel = 4,
    /// <summary>One or more operators are not supported (all are listed at once).</summary>
    UnsupportedOp = 5,
    /// <summary>An external data file is missing or cannot be mapped.</summary>
    ExternalDataMissing = 6,
    /// <summary>An external data location points outside the model's folder or is absolute.</summary>
    ExternalDataOutsideModel = 7,
    /// <summary>A tensor's declared size does not match its data.</summary>
    TensorSizeMismatch = 8,
    /// <summary>A value is used before it is defined, or never defined.</summary>
    UseBeforeDefinition = 9,
    /// <summary>The graph contains a cycle.</summary>
    GraphCycle = 10,
    /// <summary>A value is defined more than once.</summary>
    DuplicateDefinition = 11,
    /// <summary>A node's inputs disagree with its op's shape or type rule.</summary>
    ShapeMismatch = 12,
    /// <summary>A node has the wrong number of inputs or outputs for its op.</summary>
    ArityMismatch = 13,
    /// <summary>An attribute is missing, of the wrong type, or out of range.</summary>
    BadAttribute = 14,
    /// <summary>A tensor uses an element type Kiln does not support.</summary>
    UnsupportedElementType = 15,
    /// <summary>Syntax error in .kir text.</summary>
    KirSyntax = 16,
    /// <summary>A weight referenced by .kir text is missing from the weights file or its hash differs.</summary>
    KirWeightMismatch = 17,
    /// <summary>A declared type of a graph input or output disagrees with what the graph computes.</summary>
    DeclaredTypeMismatch = 18,
    /// <summary>The op exists but this opset version of it is not supported.</summary>
    UnsupportedOpsetVersion = 19,
    /// <summary>A graph form cannot be exported to ONNX.</summary>
    ExportUnsupported = 20,
    /// <summary>A run's inputs do not match the graph: missing, unknown, or of the wrong type or shape.</summary>
    InputMismatch = 21,
    /// <summary>A tensor the run needs would exceed the memory budget; refused before allocating.</summary>
    MemoryBudgetExceeded = 22,
    /// <summary>A node failed at run time on the values it was given (index out of range, shapes that do not agree).</summary>
    RuntimeError = 23,
    /// <summary>A pass pipeline does not parse, names an unknown pass, or gives a pass an option it does not have.</summary>
    InvalidPipeline = 24,
    /// <summary>A .kiln weight blob is truncated, altered, of an unknown format version, or not the one the model was compiled with.</summary>
    InvalidWeightBlob = 25,
    /// <summary>Code generation cannot handle a node or value (the message names it), or the generated code does not compile.</summary>
    CodeGenFailed = 26,
    /// <summary>Calibration data is missing, unreadable or does not fit the model.</summary>
    CalibrationData = 27,
    /// <summary>A class or namespace for generated code is not a valid C# name, or two models would generate the same class.</summary>
    InvalidName = 28,
    /// <summary>An internal error: a bug in Kiln.</summary>
    InternalError = 99,
}

public enum Severity { Error, Warning, Note }

/// <summary>One diagnostic: code, message and where it applies (file, node name and index, op).</summary>
public sealed record Diagnostic(
    DiagnosticCode Code,
    string Message,
    string? File = null,
    string? NodeName = null,
    int? NodeIndex = null,
    string? Op = null,
    Severity Severity = Severity.Error)
{
    public string CodeText => $"KILN{(int)Code:D4}";

    /// <summary>The node part of the location ("node #12 'fc1' (MatMul)"), or null when the diagnostic names no node.</summary>
    public string? NodeText
    {
        get
        {
            if (NodeIndex is null && NodeName is null && Op is null) return null;
            var node = "node";
            if (NodeIndex is not null) node += $" #{NodeIndex}";
            if (!string.IsNullOrEmpty(NodeName)) node += $" '{NodeName}'";
            if (Op is not null) node += $" ({Op})";
            return node;
        }
    }

    public override string ToString()
    {
        var where = new List<string>();
        if (File is not null) where.Add(File);
        if (NodeText is { } node) where.Add(node);
        var prefix = where.Count > 0 ? string.Join(": ", where) + ": " : "";
        var sev = Severity switch { Severity.Error => "error", Severity.Warning => "warning", _ => "note" };
        return $"{prefix}{sev} {CodeText}: {Message}";
    }
}

/// <summary>Thrown when input is invalid; carries one or more diagnostics. Never thrown for Kiln bugs.</summary>
public sealed class KilnException : Exception
{
    public IReadOnlyList<Diagnostic> Diagnostics { get; }

    public KilnException(Diagnostic diagnostic) : base(diagnostic.ToString()) => Diagnostics = [diagnostic];

    /// <summary>A diagnostic with the exception that caused it kept (an internal error's stack, shown with KILN_DEBUG=1).</summary>
    public KilnException(Diagnostic diagnostic, Exception cause) : base(diagnostic.ToString(), cause) => Diagnostics = [diagnostic];

    public KilnException(IReadOnlyList<Diagnostic> diagnostics)
        : base(string.Join(Environment.NewLine, diagnostics)) => Diagnostics = diagnostics;

    public KilnException(DiagnosticCode code, string message, string? file = null)
        : this(new Diagnostic(code, message, file)) { }

    /// <summary>The same diagnostics with the file filled in where it was unknown.</summary>
    public KilnException WithFile(string file) => Diagnostics.Count == 1 && InnerException is { } cause
        ? new(Diagnostics[0].File is null ? Diagnostics[0] with { File = file } : Diagnostics[0], cause)
        : new(Diagnostics.Select(d => d.File is null ? d with { File = file } : d).ToList());

    /// <summary>Whether this reports a bug in Kiln (KILN0099) rather than bad input.</summary>
    public bool IsInternal => Diagnostics.Any(d => d.Code == DiagnosticCode.InternalError);
}
