using Kiln.Ir;
using Kiln.Runtime;

namespace Kiln.Passes;

/// <summary>
/// Large tensors a pass produces (a layer's quantized codes), written to a scratch folder and mapped back: they then
/// live in clean file pages, which the OS can drop and read again, instead of the managed heap. Compressing a model
/// of several GB then holds about one layer's working copies in memory, plus what is mapped. The files are deleted
/// once mapped; disposing the spill (with its model) unmaps them.
/// </summary>
/// <param name="directory">the scratch folder (created on first use, deleted on dispose)</param>
/// <param name="minimumBytes">tensors below this stay in memory: a file and a mapping each would cost more than they save</param>
public sealed class WeightSpill(string directory, long minimumBytes = 1 << 20) : IDisposable
{
    private readonly List<MappedFile> _files = [];
    private int _next;

    /// <summary>Bytes written to the scratch folder so far.</summary>
    public long Bytes { get; private set; }

    /// <summary>The same tensor, backed by a mapped scratch file when it is large enough.</summary>
    public TensorData Keep(TensorData data)
    {
        if (data.ByteLength < minimumBytes || data.ByteLength == 0 || data.Elem == DType.String) return data;
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, $"{_next++}.bin");
        using (var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20)) f.Write(data.Bytes);
        var file = new MappedFile(path);
        _files.Add(file);
        // The mapping keeps the bytes on Linux and macOS; elsewhere the file goes when the spill does.
        if (!OperatingSystem.IsWindows()) File.Delete(path);
        Bytes += data.ByteLength;
        return new MappedTensorData(data.Elem, data.Dims, file, 0);
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
        if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
    }
}
