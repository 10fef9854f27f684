using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary>`kiln compile`'s names: derived from the file as the build derives them; a name C# cannot declare is one KILN0028 error.</summary>
public sealed class CompileCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-compile-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string MyModel()
    {
        var path = Path.Combine(_dir, "my-model.onnx");
        File.Copy(Path.Combine(Fixtures.RepoRoot, "examples", "tiny-mlp", "model.onnx"), path, overwrite: true);
        return path;
    }

    [Fact]
    public void The_default_class_of_my_model_onnx_is_MyModel()
    {
        var r = CliRunner.Run("compile", MyModel(), "-o", Path.Combine(_dir, "out"), "--no-verify");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.True(File.Exists(Path.Combine(_dir, "out", "MyModel.cs")));
    }

    [Theory]
    [InlineData("--class", "My-Model", "class name 'My-Model' cannot be used: it is not a C# identifier")]
    [InlineData("--class", "class", "class name 'class' cannot be used: it is a C# keyword")]
    [InlineData("--class", "model", "class name 'model' cannot be used: a type name of only lowercase letters")]
    [InlineData("--namespace", "My App", "namespace 'My App' cannot be used: 'My App' is not a C# identifier")]
    [InlineData("--namespace", "App.class", "namespace 'App.class' cannot be used: 'class' is a C# keyword")]
    [InlineData("--namespace", "App..Models", "namespace 'App..Models' cannot be used: it has an empty part between dots")]
    public void A_name_CSharp_cannot_declare_is_one_KILN0028_error_at_the_model(string option, string value, string message)
    {
        var model = MyModel();
        var r = CliRunner.Run("compile", model, "-o", Path.Combine(_dir, "out"), option, value);
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"{model}: error KILN0028: {message}", r.StdErr);
        Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(Directory.Exists(Path.Combine(_dir, "out")));
    }
}
