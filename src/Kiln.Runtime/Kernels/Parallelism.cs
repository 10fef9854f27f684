namespace Kiln.Runtime.Kernels;

/// <summary>
/// How many threads the kernels called from this thread may use. Whoever runs a model sets it for the call (a
/// compiled model's <c>Threads</c>, a decoder session's, the evaluator's) and restores it after; it is per thread,
/// so two models on two threads each keep their own, and no setting leaks into another caller. Unset (0): every core.
/// </summary>
public static class Parallelism
{
    [ThreadStatic] private static int _threads;

    /// <summary>Threads kernels called from this thread may use.</summary>
    public static int Threads => _threads > 0 ? _threads : Environment.ProcessorCount;

    /// <summary>Sets this thread's kernel threads (0: every core) until the returned scope is disposed.</summary>
    public static Scope Use(int threads)
    {
        var previous = _threads;
        _threads = Math.Max(0, threads);
        return new Scope(previous);
    }

    /// <summary>
    /// A model's own default (its <c>Threads</c>): applies only when the caller set nothing on this thread, so a
    /// session's or the evaluator's explicit setting around the call wins. 0 leaves things as they are.
    /// </summary>
    public static Scope UseUnlessSet(int threads) => Use(_threads > 0 || threads <= 0 ? _threads : threads);

    /// <summary>Restores the previous setting (a struct: setting it per call allocates nothing).</summary>
    public readonly struct Scope(int previous) : IDisposable
    {
        public void Dispose() => _threads = previous;
    }
}
