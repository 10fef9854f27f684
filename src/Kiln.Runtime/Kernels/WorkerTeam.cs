namespace Kiln.Runtime.Kernels;

/// <summary>
/// A parallel for-loop that allocates nothing: the body is a function pointer over a caller-owned state struct,
/// work items are claimed from a shared ticket, and the calling thread works too. The worker threads live for the
/// process, spin briefly after each loop (decoding calls back within microseconds) and then sleep. Decoding runs
/// hundreds of small parallel kernels per token, where <c>Parallel.For</c>'s delegates and closures would be the
/// only garbage left on the hot path.
/// </summary>
public static unsafe class WorkerTeam
{
    private static readonly object Gate = new();
    private static readonly SemaphoreSlim Wake = new(0);
    private static Thread[]? _threads;
    private static delegate*<void*, int, void> _body;
    private static void* _state;
    private static int _count;
    private static int _chunk;
    // High 32 bits: the loop's generation; low 32: the next item to claim.
    private static long _ticket;
    private static int _remaining;
    private static int _sleepers;
    // Workers that may still join the current loop (threads − 1 when it starts).
    private static int _seats;
    private static Exception? _failure;
    [ThreadStatic] private static bool _inside;
    private static long[] _workerAllocated = [];

    /// <summary>Bytes the worker threads have allocated so far (tests check that decoding adds none).</summary>
    public static long WorkerAllocatedBytes
    {
        get
        {
            var counters = _workerAllocated;
            long sum = 0;
            for (var i = 0; i < counters.Length; i++) sum += Volatile.Read(ref counters[i]);
            return sum;
        }
    }

    private const int SpinIterations = 4000;

    /// <summary>
    /// Runs <paramref name="body"/>(<paramref name="state"/>, i) for every i in [0, <paramref name="count"/>) on up
    /// to <paramref name="threads"/> threads, the caller included; returns when all are done. Nested or concurrent
    /// calls from other threads run their items on the calling thread alone. Items are claimed
    /// <paramref name="chunk"/> at a time (0: a quarter of an even share): 1 for items long enough that an uneven
    /// last claim would leave a core idle.
    /// </summary>
    public static void For(int count, int threads, delegate*<void*, int, void> body, void* state, int chunk = 0)
    {
        if (count <= 0) return;
        if (count == 1 || threads <= 1 || _inside || !Monitor.TryEnter(Gate))
        {
            for (var i = 0; i < count; i++) body(state, i);
            return;
        }
        try
        {
            EnsureThreads();
            _body = body;
            _state = state;
            _count = count;
            // Items are claimed a few chunks per thread at a time: one shared claim per item costs more than a small item.
            _chunk = chunk > 0 ? chunk : Math.Max(1, count / (threads * 4));
            _failure = null;
            Volatile.Write(ref _remaining, count);
            Volatile.Write(ref _seats, threads - 1);
            var generation = (int)(Volatile.Read(ref _ticket) >> 32) + 1;
            Interlocked.Exchange(ref _ticket, (long)generation << 32);
            // Every sleeper wakes (a permit kept back would leave a worker asleep for good); those beyond the
            // loop's seats go back to waiting without touching its items.
            var sleeping = Interlocked.Exchange(ref _sleepers, 0);
            if (sleeping > 0) Wake.Release(sleeping);
            _inside = true;
            try { Work(generation, body, state, count, _chunk); }
            finally { _inside = false; }
            var spin = new SpinWait();
            while (Volatile.Read(ref _remaining) > 0) spin.SpinOnce(-1);
            // The first failure is rethrown as it was thrown, stack included: a kernel's check stays bad input and a
            // bug stays a bug, exactly as on one thread.
            if (_failure is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
        }
        finally
        {
            Monitor.Exit(Gate);
        }
    }

    private static void Work(int generation, delegate*<void*, int, void> body, void* state, int count, int chunk)
    {
        while (true)
        {
            var t = Volatile.Read(ref _ticket);
            if ((int)(t >> 32) != generation) return;
            var first = (int)t;
            if (first >= count) return;
            var end = Math.Min(count, first + chunk);
            if (Interlocked.CompareExchange(ref _ticket, t + (end - first), t) != t) continue;
            try
            {
                for (var i = first; i < end; i++) body(state, i);
            }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            Interlocked.Add(ref _remaining, first - end);
        }
    }

    private static void EnsureThreads()
    {
        if (_threads is not null) return;
        var n = Math.Max(0, Environment.ProcessorCount - 1);
        _threads = new Thread[n];
        _workerAllocated = new long[n];
        for (var i = 0; i < n; i++)
        {
            var slot = i;
            _threads[i] = new Thread(() => Loop(slot)) { IsBackground = true, Name = $"kiln-worker-{i + 1}" };
            _threads[i].Start();
        }
    }

    private static void Loop(int slot)
    {
        _inside = true;
        var seen = (int)(Volatile.Read(ref _ticket) >> 32);
        while (true)
        {
            var spins = 0;
            int generation;
            while ((generation = (int)(Volatile.Read(ref _ticket) >> 32)) == seen)
            {
                if (spins++ < SpinIterations) { Thread.SpinWait(20); continue; }
                // A permit released for a sleeper that did not sleep only causes one extra look at the ticket later.
                Interlocked.Increment(ref _sleepers);
                if ((int)(Volatile.Read(ref _ticket) >> 32) == seen) Wake.Wait();
                spins = 0;
            }
            seen = generation;
            // Read the loop's body and state before claiming: a claim only succeeds while this generation's items
            // remain, and the caller keeps both unchanged until they are all done.
            var body = _body;
            var state = _state;
            var count = _count;
            var chunk = _chunk;
            if (Interlocked.Decrement(ref _seats) >= 0) Work(generation, body, state, count, chunk);
            Volatile.Write(ref _workerAllocated[slot], GC.GetAllocatedBytesForCurrentThread());
        }
    }
}
