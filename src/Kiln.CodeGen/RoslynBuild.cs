using System.Reflection;
using Kiln.Ir.Diagnostics;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Kiln.CodeGen;

/// <summary>Compiles generated C# with Roslyn: to check it builds without warnings, and to load it in memory (<c>kiln run --engine compiled</c>).</summary>
public static class RoslynBuild
{
    private static readonly Lazy<IReadOnlyList<MetadataReference>> References = new(() =>
    {
        var paths = ((string?)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries).ToList();
        paths.Add(typeof(Runtime.Tensor).Assembly.Location);
        return paths.Distinct(StringComparer.Ordinal).Where(File.Exists).Select(p => (MetadataReference)MetadataReference.CreateFromFile(p)).ToList();
    });

    /// <summary>Roslyn's formatting of a generated file (indentation and spacing normalized; comments kept), long lines wrapped.</summary>
    public static string Format(string source) =>
        LineWrapping.Wrap(CSharpSyntaxTree.ParseText(source).GetRoot().NormalizeWhitespace(eol: "\n").ToFullString() + "\n");

    /// <summary>Compiles the sources into an assembly image; any warning or error fails with KILN0026 listing the first few.</summary>
    public static byte[] Compile(string assemblyName, IEnumerable<(string Path, string Source)> sources)
    {
        var options = new CSharpParseOptions(LanguageVersion.Latest);
        var trees = sources.Select(s => CSharpSyntaxTree.ParseText(s.Source, options, s.Path)).ToList();
        var compilation = CSharpCompilation.Create(assemblyName, trees, References.Value,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, optimizationLevel: OptimizationLevel.Release,
                nullableContextOptions: NullableContextOptions.Enable, generalDiagnosticOption: ReportDiagnostic.Error, concurrentBuild: true));
        using var image = new MemoryStream();
        var result = compilation.Emit(image);
        var problems = result.Diagnostics.Where(d => d.Severity >= DiagnosticSeverity.Warning).ToList();
        if (!result.Success || problems.Count > 0)
            throw new KilnException(new Kiln.Ir.Diagnostics.Diagnostic(DiagnosticCode.CodeGenFailed,
                $"the generated code does not compile cleanly ({problems.Count} problems): " + string.Join("; ", problems.Take(5).Select(d => d.ToString()))));
        return image.ToArray();
    }

    /// <summary>Compiles and loads the sources into a collectible context; the caller unloads it when done.</summary>
    public static (Assembly Assembly, System.Runtime.Loader.AssemblyLoadContext Context) Load(string assemblyName, IEnumerable<(string Path, string Source)> sources)
    {
        var image = Compile(assemblyName, sources);
        var context = new System.Runtime.Loader.AssemblyLoadContext(assemblyName, isCollectible: true);
        return (context.LoadFromStream(new MemoryStream(image)), context);
    }
}
