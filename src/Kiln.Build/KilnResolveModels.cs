using Kiln.CodeGen;
using Kiln.Ir.Diagnostics;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using Kiln.Compiler;

namespace Kiln.Build;

/// <summary>
/// Gives each <c>&lt;KilnModel&gt;</c> its class name and namespace before anything is compiled: the class from
/// the metadata or, as <c>kiln compile</c> derives it, from the file name (the folder's for model.onnx); the
/// namespace from the metadata or the project's root namespace. A name the generated code could not declare, or two
/// models with the same class (they would write the same files), is one KILN0028 error at the model file.
/// </summary>
public sealed class KilnResolveModels : Microsoft.Build.Utilities.Task
{
    [Required] public ITaskItem[] Models { get; set; } = [];

    /// <summary>The namespace of models without a Namespace (the project's RootNamespace).</summary>
    public string? RootNamespace { get; set; }

    /// <summary>The models with ClassName and Namespace set.</summary>
    [Output] public ITaskItem[] Resolved { get; private set; } = [];

    public override bool Execute()
    {
        var resolved = new List<ITaskItem>();
        // Class names compared as file names may be: obj/kiln/CLASS/ and CLASS.kiln beside the app.
        var byClass = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var model in Models)
        {
            var item = new TaskItem(model);
            var className = model.GetMetadata("ClassName");
            if (string.IsNullOrWhiteSpace(className)) className = ModelCompiler.DefaultClassName(model.GetMetadata("FullPath"));
            var ns = model.GetMetadata("Namespace");
            if (string.IsNullOrWhiteSpace(ns)) ns = RootNamespace ?? "";
            item.SetMetadata("ClassName", className);
            item.SetMetadata("Namespace", ns);
            try
            {
                ModelCompiler.CheckNames(ns, className, model.ItemSpec);
            }
            catch (KilnException e)
            {
                foreach (var d in e.Diagnostics) Log.LogError(null, d.CodeText, null, model.ItemSpec, 0, 0, 0, 0, d.Message);
                continue;
            }
            if (byClass.TryGetValue(className, out var first))
            {
                Log.LogError(null, new Diagnostic(DiagnosticCode.InvalidName, "").CodeText, null, model.ItemSpec, 0, 0, 0, 0,
                    $"class '{className}' is already generated from {first}: two models would write the same files; give one of them another ClassName");
                continue;
            }
            byClass[className] = model.ItemSpec;
            resolved.Add(item);
        }
        Resolved = [.. resolved];
        return !Log.HasLoggedErrors;
    }
}
