using Kiln.Compiler;
using Kiln.Ir;
using Kiln.Runtime;
using Kiln.Runtime.Weights;

namespace Kiln.CodeGen.Tests;

/// <summary>The .kiln blob: round trip, alignment, and refusal of damaged or mismatched files.</summary>
public sealed class WeightBlobTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-blob-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string Hash = new('a', 64);

    private string WriteSample(string name = "w.kiln")
    {
        var path = Path.Combine(_dir, name);
        WeightBlobWriter.Write(path,
        [
            new BlobTensor("layer.weight", TensorData.FromArray(DType.F32, [2, 3], new float[] { 1, 2, 3, 4, 5, 6 })),
            new BlobTensor("ids", TensorData.FromArray(DType.I64, [3], new long[] { 7, 8, 9 })),
            new BlobTensor("empty", TensorData.FromArray(DType.F32, [0], Array.Empty<float>())),
        ], Hash);
        return path;
    }

    [Fact]
    public void Tensors_round_trip_aligned_from_a_mapped_file_and_from_a_stream()
    {
        var path = WriteSample();
        using (var blob = WeightBlob.Open(path, Hash))
        {
            Assert.Equal(WeightBlob.FormatVersion, blob.Version);
            Assert.Equal(["layer.weight", "ids", "empty"], blob.Entries.Select(e => e.Name));
            Assert.All(blob.Entries, e => Assert.Equal(0, e.Offset % WeightBlob.Alignment));
            Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, blob.Get("layer.weight", DType.F32, [2, 3]).Span<float>().ToArray());
            Assert.Equal(new long[] { 7, 8, 9 }, blob.Get("ids", DType.I64, [3]).Span<long>().ToArray());
            Assert.Equal(0, blob.Get("empty", DType.F32, [0]).Length);
        }
        using var stream = File.OpenRead(path);
        using var loaded = WeightBlob.Load(stream, "resource w.kiln", Hash);
        Assert.Equal(new long[] { 7, 8, 9 }, loaded.Get("ids", DType.I64, [3]).Span<long>().ToArray());
        using var copied = WeightBlob.Open(path, Hash, WeightLoading.Copy);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, copied.Get("layer.weight", DType.F32, [2, 3]).Span<float>().ToArray());
    }

    private static string Refusal(string path, string? hash = null)
    {
        // Mapped and copied loading, checked in full at open, refuse the same way.
        var copied = Assert.Throws<WeightBlobException>(() => WeightBlob.Open(path, hash ?? Hash, WeightLoading.Copy).Dispose()).Message;
        var mapped = Assert.Throws<WeightBlobException>(() => WeightBlob.Open(path, hash ?? Hash, WeightLoading.Map, WeightVerification.Full).Dispose()).Message;
        Assert.Equal(mapped, copied);
        return mapped;
    }

    [Fact]
    public void A_flipped_byte_anywhere_after_the_header_is_refused()
    {
        var path = WriteSample();
        var bytes = File.ReadAllBytes(path);
        foreach (var at in new[] { WeightBlob.HeaderSize + 3, bytes.Length - 1, bytes.Length / 2 })
        {
            var damaged = (byte[])bytes.Clone();
            damaged[at] ^= 0x10;
            File.WriteAllBytes(path, damaged);
            var message = Refusal(path);
            Assert.StartsWith("KILN0025:", message);
            Assert.Contains("altered", message);
            Assert.Contains(path, message);
        }
    }

    [Fact]
    public void Every_header_byte_is_checked_flipped_bits_give_KILN0025_and_nothing_else()
    {
        var path = WriteSample();
        var bytes = File.ReadAllBytes(path);
        for (var at = 0; at < WeightBlob.HeaderSize; at++)
            foreach (var mask in new byte[] { 0x01, 0x80, 0xFF })
            {
                var damaged = (byte[])bytes.Clone();
                damaged[at] ^= mask;
                File.WriteAllBytes(path, damaged);
                // A lazy open reads only the header and table: it must refuse them already.
                var e = Record.Exception(() => WeightBlob.Open(path, Hash, WeightLoading.Map, WeightVerification.Lazy).Dispose());
                Assert.True(e is WeightBlobException, $"byte {at} ^ 0x{mask:x2}: {e?.GetType().Name ?? "accepted"} {e?.Message}");
                Assert.StartsWith("KILN0025:", e!.Message);
            }
    }

    [Fact]
    public void A_lazy_open_hashes_nothing_and_the_first_check_refuses_a_damaged_chunk()
    {
        var path = WriteSample();
        using (var blob = WeightBlob.Open(path, Hash))
        {
            Assert.Equal(0, blob.BytesVerified);
            Assert.False(blob.FullyVerified);
            Assert.Equal(new long[] { 7, 8, 9 }, blob.Get("ids", DType.I64, [3]).Span<long>().ToArray());
            Assert.Equal(0, blob.BytesVerified); // views do not hash
            blob.EnsureVerified();
            Assert.True(blob.FullyVerified);
            Assert.Equal(new FileInfo(path).Length - blob.Entries.Min(e => e.Offset) - DataOffset(path), blob.BytesVerified);
        }
        var bytes = File.ReadAllBytes(path);
        bytes[^1] ^= 0x10;
        File.WriteAllBytes(path, bytes);
        using var damaged = WeightBlob.Open(path, Hash);
        Assert.Equal(0, damaged.BytesVerified);
        var first = Assert.Throws<WeightBlobException>(damaged.EnsureVerified).Message;
        Assert.Contains("altered", first);
        Assert.Equal(first, Assert.Throws<WeightBlobException>(damaged.EnsureVerified).Message); // and on every later call
    }

    private static long DataOffset(string path) => BitConverter.ToInt64(File.ReadAllBytes(path).AsSpan(56, 8));

    [Fact]
    public void A_blob_over_2_GiB_opens_lazily_with_views_past_2_GiB()
    {
        // Nine 256 MiB tensors of zeros (the writer skips zero runs: the file is sparse) and a small one past 2 GiB.
        var zeros = TensorData.FromArray(DType.U8, [256L << 20], new byte[256 << 20]);
        var tensors = Enumerable.Range(0, 9).Select(i => new BlobTensor($"zeros.{i}", zeros)).ToList();
        tensors.Add(new BlobTensor("tail", TensorData.FromArray(DType.F32, [4], new float[] { 1, 2, 3, 4 })));
        var path = Path.Combine(_dir, "big.kiln");
        var length = WeightBlobWriter.Write(path, tensors, Hash);
        Assert.True(length > 1L << 31);
        using var blob = WeightBlob.Open(path, Hash);
        Assert.Equal(0, blob.BytesVerified);
        var tail = blob.Entries.Single(e => e.Name == "tail");
        Assert.True(tail.Offset > int.MaxValue);
        Assert.Equal(new float[] { 1, 2, 3, 4 }, blob.Get("tail", DType.F32, [4]).Span<float>().ToArray());
        Assert.Equal(256 << 20, blob.Get("zeros.8", DType.U8, [256 << 20]).Length);
    }

    [Fact]
    public void A_truncated_blob_is_refused()
    {
        var path = WriteSample();
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 10)]);
        Assert.Contains("truncated", Refusal(path));
        File.WriteAllBytes(path, bytes[..40]);
        Assert.Contains("shorter than the 128-byte header", Refusal(path));
        File.WriteAllBytes(path, []);
        Assert.Contains("truncated", Refusal(path));
    }

    [Fact]
    public void An_unknown_format_version_or_magic_is_refused()
    {
        var path = WriteSample();
        var bytes = File.ReadAllBytes(path);
        bytes[8] = 1; // a blob of the first format (before chunk hashes and the index hash)
        File.WriteAllBytes(path, bytes);
        Assert.Contains("has format version 1; this runtime reads version 2 (recompile the model with this Kiln)", Refusal(path));
        bytes[0] = (byte)'X';
        File.WriteAllBytes(path, bytes);
        Assert.Contains("not a Kiln weight blob", Refusal(path));
    }

    [Fact]
    public void A_blob_of_another_model_is_refused()
    {
        var path = WriteSample();
        Assert.Contains("but the code was compiled for model", Refusal(path, new string('b', 64)));
    }

    [Fact]
    public void Asking_for_a_tensor_with_another_type_or_shape_is_refused()
    {
        using var blob = WeightBlob.Open(WriteSample(), Hash);
        Assert.Contains("holds 'ids' as i64[3]", Assert.Throws<WeightBlobException>(() => blob.Get("ids", DType.F32, [3])).Message);
        Assert.Contains("has no tensor 'nope'", Assert.Throws<WeightBlobException>(() => blob.Get("nope", DType.F32, [3])).Message);
    }

    [Fact]
    public void Writing_the_same_tensors_twice_gives_the_same_bytes()
    {
        Assert.Equal(File.ReadAllBytes(WriteSample("a.kiln")), File.ReadAllBytes(WriteSample("b.kiln")));
    }

    [Fact]
    public void A_weight_over_2_GiB_is_refused_at_compile_time_with_a_KILN_code()
    {
        // A 2.5 GiB external-data weight (a sparse file, mapped as the importer maps external data).
        var data = Path.Combine(_dir, "big.data");
        using (var f = File.Create(data)) f.SetLength(5L << 29);
        using var file = new MappedFile(data);
        var g = new Graph("big");
        var x = g.AddInput("x", new TensorType(DType.I64, Shape.Of(1)));
        var w = g.AddConstant("huge.weight", new MappedTensorData(DType.F32, [5L << 27], file, 0));
        var n = g.AddNode("Gather", "", "lookup", [w, x], ["y"]);
        g.AddOutput(n.Outputs[0]!, new TensorType(DType.F32, null));
        using var model = new Model(g);
        var e = Assert.Throws<Kiln.Ir.Diagnostics.KilnException>(() => ModelCompiler.Compile(model, "big.onnx", new CompileOptions { Verify = false }));
        var d = Assert.Single(e.Diagnostics);
        Assert.Equal(Kiln.Ir.Diagnostics.DiagnosticCode.CodeGenFailed, d.Code);
        Assert.Contains("'huge.weight'", d.Message);
        Assert.Contains("at most 2,147,483,647", d.Message);
    }
}
