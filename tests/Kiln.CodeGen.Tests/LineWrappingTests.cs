using Kiln.Compiler;
using Kiln.Onnx;
using Kiln.TestSupport;
using Microsoft.CodeAnalysis.CSharp;

namespace Kiln.CodeGen.Tests;

/// <summary>Generated code keeps its lines under ~140 characters: long lists one item per line, call chains one call per line.</summary>
public sealed class LineWrappingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-wrap-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Tokens(string source) =>
        string.Join(" ", CSharpSyntaxTree.ParseText(source).GetRoot().DescendantTokens().Select(t => t.Text));

    [Fact]
    public void Long_argument_lists_and_call_chains_wrap_without_changing_the_code()
    {
        var call = "class C { void M() { Kernels.MatMul.Gemm(" + string.Join(", ", Enumerable.Range(0, 30).Select(i => $"argument{i}")) + "); } }";
        var chain = "class D { static readonly A Attrs = new A()" + string.Concat(Enumerable.Range(0, 12).Select(i => $".Set(\"attribute{i}\", {i}L)")) + "; }";
        foreach (var source in new[] { call, chain })
        {
            var formatted = RoslynBuild.Format(source);
            Assert.All(formatted.Split('\n'), line => Assert.True(line.Length <= LineWrapping.MaxLine, line));
            Assert.Equal(Tokens(source), Tokens(formatted));
        }
        Assert.Contains("\n            argument29);", RoslynBuild.Format(call));
        Assert.Contains("\n        .Set(\"attribute11\", 11L);", RoslynBuild.Format(chain));
    }

    [Fact]
    public void A_compiled_decoder_has_no_code_line_over_the_limit()
    {
        var path = Fixtures.Model("llama-tiny-random/model.onnx");
        using var m = OnnxImporter.Import(path);
        using var runner = CompiledRunner.CompileInMemory(m, path, new CompileOptions(), _dir);
        var source = File.ReadAllLines(Directory.GetFiles(_dir, "*.cs", SearchOption.AllDirectories).Single());
        // Comments carry the IR's node and value names as they are.
        var over = source.Where(l => l.Length > LineWrapping.MaxLine && !l.TrimStart().StartsWith("//", StringComparison.Ordinal)).ToList();
        Assert.True(over.Count == 0, string.Join("\n", over.Take(5)));
        Assert.Contains(source, l => l.Contains("int n_batch = (int)(dim_batch);", StringComparison.Ordinal));
    }
}
