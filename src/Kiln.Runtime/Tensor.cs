using System.Runtime.InteropServices;

namespace Kiln.Runtime;

/// <summary>
/// The one tensor type of Kiln's runtime: an element type, a shape and dense row-major data. Numeric data is a
/// block of bytes (managed, or a view into a memory-mapped weight file); strings are a string array. Tensors are
/// values: kernels read their inputs and write only the outputs they allocate, so a reshape can share storage.
/// </summary>
public sealed class Tensor
{
    private readonly Memory<byte> _bytes;
    private readonly string[]? _strings;

    private Tensor(DType type, int[] shape, Memory<byte> bytes, string[]? strings, long length)
    {
        Type = type;
        Shape = shape;
        _bytes = bytes;
        _strings = strings;
        Length = length;
    }

    public DType Type { get; }

    /// <summary>Dims, outermost first. Callers must not change it.</summary>
    public int[] Shape { get; }

    public int Rank => Shape.Length;

    public long Length { get; }

    /// <summary>The storage object (for liveness accounting: views share it).</summary>
    public object Storage => _strings is not null ? _strings : MemoryMarshal.TryGetArray<byte>(_bytes, out var seg) && seg.Array is not null ? seg.Array : this;

    public long ByteLength => Type == DType.String ? Length * IntPtr.Size : _bytes.Length;

    public static long Count(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new KernelException($"negative dimension {d} in shape [{string.Join(", ", shape.ToArray())}]");
            n = checked(n * d);
        }
        return n;
    }

    /// <summary>A zero-filled tensor. Counts against <see cref="MemoryBudget.Current"/> before allocating.</summary>
    public static Tensor Zeros(DType type, int[] shape)
    {
        var n = Count(shape);
        if (type == DType.String)
        {
            MemoryBudget.Current?.Reserve(n * IntPtr.Size, shape, type);
            var s = new string[n];
            Array.Fill(s, "");
            return new Tensor(type, shape, default, s, n);
        }
        var bytes = n * type.Size();
        MemoryBudget.Current?.Reserve(bytes, shape, type);
        if (bytes > Array.MaxLength) throw new KernelException($"a {type.Name()}[{string.Join(", ", shape)}] tensor ({bytes:N0} bytes) exceeds the largest array .NET can hold");
        return new Tensor(type, shape, new byte[bytes], null, n);
    }

    /// <summary>A tensor whose contents the caller overwrites completely.</summary>
    public static Tensor Uninitialized(DType type, int[] shape)
    {
        if (type == DType.String) return Zeros(type, shape);
        var n = Count(shape);
        var bytes = n * type.Size();
        MemoryBudget.Current?.Reserve(bytes, shape, type);
        if (bytes > Array.MaxLength) throw new KernelException($"a {type.Name()}[{string.Join(", ", shape)}] tensor ({bytes:N0} bytes) exceeds the largest array .NET can hold");
        // Under a pool, buffers come in its size classes (so they can be reused by slightly larger tensors later).
        var pool = TensorPool.Current;
        var buffer = pool?.Rent((int)bytes) ?? GC.AllocateUninitializedArray<byte>(pool is null ? (int)bytes : TensorPool.ClassSize((int)bytes));
        return new Tensor(type, shape, buffer.AsMemory(0, (int)bytes), null, n);
    }

    /// <summary>Wraps existing bytes without copying (constants, mapped weights). The bytes must not change while in use.</summary>
    public static Tensor Wrap(DType type, int[] shape, Memory<byte> bytes, bool persistent = false)
    {
        var n = Count(shape);
        if (bytes.Length != n * type.Size())
            throw new KernelException($"{type.Name()}[{string.Join(", ", shape)}] needs {n * type.Size()} bytes, got {bytes.Length}");
        return new Tensor(type, shape, bytes, null, n) { Persistent = persistent };
    }

    /// <summary>
    /// True for tensors that live as long as the model (weights): kernels may cache derived forms of them, such as
    /// GEMM-packed panels, keyed on the tensor object.
    /// </summary>
    public bool Persistent { get; private init; }

    public static Tensor FromArray<T>(DType type, int[] shape, T[] values) where T : unmanaged
    {
        if (Marshal.SizeOf<T>() != type.Size()) throw new KernelException($"{typeof(T).Name} values cannot hold {type.Name()}");
        var n = Count(shape);
        if (values.Length != n) throw new KernelException($"shape [{string.Join(", ", shape)}] needs {n} values, got {values.Length}");
        return new Tensor(type, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), null, n);
    }

    public static Tensor FromStrings(int[] shape, string[] values)
    {
        var n = Count(shape);
        if (values.Length != n) throw new KernelException($"shape [{string.Join(", ", shape)}] needs {n} strings, got {values.Length}");
        return new Tensor(DType.String, shape, default, values, n);
    }

    public static Tensor Scalar(float v) => FromArray(DType.F32, [], [v]);

    public static Tensor Scalar(long v) => FromArray(DType.I64, [], [v]);

    public static Tensor Scalar(bool v) => FromArray(DType.Bool, [], [(byte)(v ? 1 : 0)]);

    public static Tensor Vector(params long[] v) => FromArray(DType.I64, [v.Length], v);

    public Span<T> Span<T>() where T : unmanaged => MemoryMarshal.Cast<byte, T>(_bytes.Span);

    public Span<byte> Bytes => _strings is not null ? throw new KernelException("string tensors have no bytes") : _bytes.Span;

    public Memory<byte> Memory => _bytes;

    public string[] Strings => _strings ?? throw new KernelException($"a {Type.Name()} tensor is not a string tensor");

    /// <summary>The same data under another shape with the same element count (no copy).</summary>
    public Tensor Reshape(int[] shape)
    {
        if (Count(shape) != Length) throw new KernelException($"cannot reshape [{string.Join(", ", Shape)}] ({Length} elements) to [{string.Join(", ", shape)}]");
        return new Tensor(Type, shape, _bytes, _strings, Length) { Persistent = Persistent };
    }

    /// <summary>Element <paramref name="i"/> as a double, whatever the element type (for small shape-like tensors and slow paths).</summary>
    public double GetDouble(long i) => Type switch
    {
        DType.F32 => Span<float>()[(int)i],
        DType.F64 => Span<double>()[(int)i],
        DType.F16 => (double)Span<Half>()[(int)i],
        DType.BF16 => BFloat16.ToSingle(Span<ushort>()[(int)i]),
        DType.I64 => Span<long>()[(int)i],
        DType.I32 => Span<int>()[(int)i],
        DType.I16 => Span<short>()[(int)i],
        DType.I8 => Span<sbyte>()[(int)i],
        DType.U8 or DType.Bool => Span<byte>()[(int)i],
        DType.U16 => Span<ushort>()[(int)i],
        DType.U32 => Span<uint>()[(int)i],
        DType.U64 => Span<ulong>()[(int)i],
        _ => throw new KernelException($"{Type.Name()} is not numeric"),
    };

    /// <summary>Element <paramref name="i"/> as a long (integer tensors exactly; floats truncated).</summary>
    public long GetLong(long i) => Type switch
    {
        DType.I64 => Span<long>()[(int)i],
        DType.I32 => Span<int>()[(int)i],
        DType.I16 => Span<short>()[(int)i],
        DType.I8 => Span<sbyte>()[(int)i],
        DType.U8 or DType.Bool => Span<byte>()[(int)i],
        DType.U16 => Span<ushort>()[(int)i],
        DType.U32 => Span<uint>()[(int)i],
        DType.U64 => (long)Span<ulong>()[(int)i],
        _ => (long)GetDouble(i),
    };

    /// <summary>Every element as a long (shape and index inputs).</summary>
    public long[] ToLongs()
    {
        MemoryBudget.Scratch(Length, sizeof(long));
        var r = new long[Length];
        for (var i = 0; i < r.Length; i++) r[i] = GetLong(i);
        return r;
    }

    public double[] ToDoubles()
    {
        MemoryBudget.Scratch(Length, sizeof(double));
        var r = new double[Length];
        for (var i = 0; i < r.Length; i++) r[i] = GetDouble(i);
        return r;
    }

    /// <summary>Row-major strides in elements.</summary>
    public static long[] Strides(ReadOnlySpan<int> shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            s[i] = acc;
            acc *= shape[i];
        }
        return s;
    }

    public override string ToString() => $"{Type.Name()}[{string.Join(", ", Shape)}]";
}

/// <summary>bfloat16 conversions (upper 16 bits of an IEEE float; round to nearest even on the way down).</summary>
public static class BFloat16
{
    public static float ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    public static ushort FromSingle(float v)
    {
        if (float.IsNaN(v)) return 0x7FC0;
        var bits = (uint)BitConverter.SingleToInt32Bits(v);
        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
