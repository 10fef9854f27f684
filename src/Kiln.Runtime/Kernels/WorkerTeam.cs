namespace Kiln.Runtime.Kernels;

/// <summary>
/// A parallel for-loop that allocates nothing: the body is a function pointer over a caller-owned state struct,
/// work items are claimed from a shared ticket, and the calling thread works too. Decoding runs hundreds of small
/// parallel kernels per token, where <c>Parallel.For</c>'s delegates and closures would be the only garbage left on
/// the hot path.
/// <para>
/// The workers come in teams of (cores − 1) threads that live for the process, spin briefly after each loop
/// (decoding calls back within microseconds) and then sleep. A loop takes an idle team for its duration; a loop
/// started while every team is busy (two models running on two threads) gets a new team, so concurrent callers
/// each run in parallel instead of one of them silently running alone. Teams are created on demand and reused: as
/// many exist as loops have ever run at once.
/// </para>
/// </summary>
public static unsafe class WorkerTeam
{
    private static readonly Stack<Team> Idle = new();
    private static readonly List<Team> All = [];
    [ThreadStatic] private static bool _inside;

    /// <summary>Bytes the worker threads have allocated so far (tests check that decoding adds none).</summary>
    public static long WorkerAllocatedBytes
    {
        get
        {
            lock (Idle)
            {
                long sum = 0;
                foreach (var t in All) sum += t.AllocatedBytes;
                return sum;
            }
        }
    }

    /// <summary>Teams created so far: the most loops that ran at once.</summary>
    public static int Teams
    {
        get
        {
            lock (Idle) return All.Count;
        }
    }

    private const int SpinIterations = 4000;

    /// <summary>
    /// Runs <paramref name="body"/>(<paramref name="state"/>, i) for every i in [0, <paramref name="count"/>) on up
    /// to <paramref name="threads"/> threads, the caller included; returns when all are done. A loop nested in
    /// another runs on the calling thread alone. Items are claimed <paramref name="chunk"/> at a time (0: a quarter
    /// of an even share): 1 for items long enough that an uneven last claim would leave a core idle. The first
    /// exception a body throws is rethrown here as it was thrown.
    /// </summary>
    public static void For(int count, int threads, delegate*<void*, int, void> body, void* state, int chunk = 0)
    {
        if (count <= 0) return;
        if (count == 1 || threads <= 1 || _inside || Environment.ProcessorCount == 1)
        {
            for (var i = 0; i < count; i++) body(state, i);
            return;
        }
        Team team;
        lock (Idle)
        {
            if (!Idle.TryPop(out team!))
            {
                team = new Team(All.Count);
                All.Add(team);
            }
        }
        try
        {
            team.For(count, threads, body, state, chunk);
        }
        finally
        {
            lock (Idle) Idle.Push(team);
        }
    }

    /// <summary>(cores − 1) worker threads and the loop they are working on.</summary>
    private sealed class Team
    {
        private readonly SemaphoreSlim _wake = new(0);
        private readonly long[] _allocated;
        private delegate*<void*, int, void> _body;
        private void* _state;
        private int _count;
        private int _chunk;
        // High 32 bits: the loop's generation; low 32: the next item to claim.
        private long _ticket;
        private int _remaining;
        private int _sleepers;
        // Workers that may still join the current loop (threads − 1 when it starts).
        private int _seats;
        private Exception? _failure;

        public Team(int index)
        {
            var n = Math.Max(0, Environment.ProcessorCount - 1);
            _allocated = new long[n];
            for (var i = 0; i < n; i++)
            {
                var slot = i;
                new Thread(() => Loop(slot)) { IsBackground = true, Name = $"kiln-worker-{index + 1}.{i + 1}" }.Start();
            }
        }

        public long AllocatedBytes
        {
            get
            {
                long sum = 0;
                for (var i = 0; i < _allocated.Length; i++) sum += Volatile.Read(ref _allocated[i]);
                return sum;
            }
        }

        public void For(int count, int threads, delegate*<void*, int, void> body, void* state, int chunk)
        {
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
            if (sleeping > 0) _wake.Release(sleeping);
            _inside = true;
            try { Work(generation, body, state, count, _chunk); }
            finally { _inside = false; }
            var spin = new SpinWait();
            while (Volatile.Read(ref _remaining) > 0) spin.SpinOnce(-1);
            // The first failure is rethrown as it was thrown, stack included: a kernel's check stays bad input and a
            // bug stays a bug, exactly as on one thread.
            if (_failure is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
        }

        private void Work(int generation, delegate*<void*, int, void> body, void* state, int count, int chunk)
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

        private void Loop(int slot)
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
                    if ((int)(Volatile.Read(ref _ticket) >> 32) == seen) _wake.Wait();
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
                Volatile.Write(ref _allocated[slot], GC.GetAllocatedBytesForCurrentThread());
            }
        }
    }
}
