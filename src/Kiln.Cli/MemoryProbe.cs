namespace Kiln.Cli;

/// <summary>Measures the process's peak resident memory over an operation (Linux: /proc/self; elsewhere the GC's view).</summary>
internal static class MemoryProbe
{
    public sealed record Result(long BaselineBytes, long PeakBytes)
    {
        public long AboveBaseline => Math.Max(0, PeakBytes - BaselineBytes);
    }

    public static Result Measure(Action action)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var procAvailable = File.Exists("/proc/self/status");
        if (procAvailable)
        {
            // Writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS, so the peak is this operation's.
            try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        var baseline = procAvailable ? ReadKb("VmRSS") : GC.GetTotalMemory(false);
        action();
        var peak = procAvailable ? ReadKb("VmHWM") : GC.GetGCMemoryInfo().HeapSizeBytes;
        return new Result(baseline, peak);
    }

    private static long ReadKb(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]) * 1024;
        return 0;
    }
}
