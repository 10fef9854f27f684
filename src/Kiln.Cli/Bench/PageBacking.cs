using System.Globalization;
using System.Runtime.InteropServices;

namespace Kiln.Cli.Bench;

/// <summary>How an engine's weights are backed: "huge" (transparent huge pages) or "plain" (4 KiB pages).</summary>
public enum Pages { Huge, Plain }

/// <summary>One mapping of this process (a line of /proc/self/smaps with its counters), in bytes.</summary>
internal sealed record MemoryRegion(ulong Start, ulong End, string Path, long Resident, long HugeBacked)
{
    public bool Anonymous => Path.Length == 0 || Path == "[heap]";
}

/// <summary>What an engine's weights got: the bytes measured in huge pages against the bytes measured resident.</summary>
public sealed record PageReport(Pages Pages, long HugeBytes, long ResidentBytes);

/// <summary>
/// Gives both engines of <c>kiln bench</c> the same page treatment and measures what each got (Linux; elsewhere
/// every engine is reported plain). Plain: transparent huge pages off for the whole process before anything loads
/// (<c>prctl(PR_SET_THP_DISABLE)</c>). Huge: Kiln's weights are asked for huge pages by its loader; ONNX Runtime
/// allocates its own, so the regions its session creation added are advised and collapsed into huge pages
/// (<c>MADV_HUGEPAGE</c>, <c>MADV_COLLAPSE</c>) after the fact. Either way the result is read back from
/// /proc/self/smaps (AnonHugePages, FilePmdMapped), never assumed.
/// </summary>
internal static unsafe class PageBacking
{
    private const int PrSetThpDisable = 41;
    private const int MadvHugePage = 14;
    private const int MadvCollapse = 25;
    private const long HugePage = 2 << 20;

    public static string Name(Pages p) => p == Pages.Huge ? "huge" : "plain";

    /// <summary>Turns transparent huge pages off for this process (every engine then gets plain pages).</summary>
    public static void DisableHugePages()
    {
        if (OperatingSystem.IsLinux()) _ = Prctl(PrSetThpDisable, 1, 0, 0, 0);
    }

    /// <summary>The mappings of this process now.</summary>
    public static IReadOnlyList<MemoryRegion> Snapshot()
    {
        var list = new List<MemoryRegion>();
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/self/smaps")) return list;
        ulong start = 0, end = 0;
        string path = "";
        long rss = 0, huge = 0;
        var open = false;
        void Flush()
        {
            if (open) list.Add(new MemoryRegion(start, end, path, rss, huge));
        }
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            var colon = line.IndexOf(':');
            var dash = line.IndexOf('-');
            if (dash > 0 && (colon < 0 || dash < colon) && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var s))
            {
                Flush();
                var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                start = s;
                end = ulong.Parse(parts[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                path = parts.Length > 5 ? parts[5].Trim() : "";
                rss = huge = 0;
                open = true;
                continue;
            }
            if (line.StartsWith("Rss:", StringComparison.Ordinal)) rss = Kb(line);
            else if (line.StartsWith("AnonHugePages:", StringComparison.Ordinal) || line.StartsWith("FilePmdMapped:", StringComparison.Ordinal)) huge += Kb(line);
        }
        Flush();
        return list;
    }

    private static long Kb(string line) => long.Parse(line.AsSpan(line.IndexOf(':') + 1).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;

    /// <summary>The regions that are new or grew by at least 1 MiB since <paramref name="before"/> (what a call in between allocated).</summary>
    public static IReadOnlyList<MemoryRegion> Grown(IReadOnlyList<MemoryRegion> before, IReadOnlyList<MemoryRegion> after)
    {
        // smaps is not read atomically: a mapping that splits or merges while it is read can list one start twice.
        var earlier = new Dictionary<ulong, long>();
        foreach (var r in before) earlier[r.Start] = Math.Max(r.Resident, earlier.GetValueOrDefault(r.Start));
        return after.Where(r => r.Resident - earlier.GetValueOrDefault(r.Start) >= 1 << 20).ToList();
    }

    /// <summary>Asks for huge pages over the anonymous regions and collapses what is already resident into them.</summary>
    public static void Collapse(IEnumerable<MemoryRegion> regions)
    {
        if (!OperatingSystem.IsLinux()) return;
        foreach (var r in regions.Where(r => r.Anonymous)) Collapse((nint)r.Start, (long)(r.End - r.Start));
    }

    /// <summary>Asks for huge pages over [address, address + length) and collapses its resident pages into them.</summary>
    public static void Collapse(nint address, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0) return;
        // madvise takes page-aligned starts; MADV_COLLAPSE works on the 2 MiB-aligned part.
        var first = (address + (nint)HugePage - 1) & ~(nint)(HugePage - 1);
        var last = (address + (nint)length) & ~(nint)(HugePage - 1);
        if (last <= first) return;
        _ = Madvise((void*)first, (nuint)(last - first), MadvHugePage);
        _ = Madvise((void*)first, (nuint)(last - first), MadvCollapse);
    }

    /// <summary>Huge-page and resident bytes of [address, address + length), from the regions that overlap it (each counted in proportion to the overlap).</summary>
    public static PageReport Measure(nint address, long length) => Measure(Snapshot(), (ulong)address, (ulong)address + (ulong)length);

    /// <summary>
    /// Huge-page against resident bytes over the address ranges of <paramref name="regions"/>, read again now (by
    /// range: advising part of a region splits it into several).
    /// </summary>
    public static PageReport Measure(IReadOnlyList<MemoryRegion> regions)
    {
        var now = Snapshot();
        long huge = 0, resident = 0;
        foreach (var r in regions)
        {
            var part = Measure(now, r.Start, r.End);
            huge += part.HugeBytes;
            resident += part.ResidentBytes;
        }
        return Report(huge, resident);
    }

    private static PageReport Measure(IReadOnlyList<MemoryRegion> regions, ulong from, ulong to)
    {
        double huge = 0, resident = 0;
        foreach (var r in regions)
        {
            var lo = Math.Max(r.Start, from);
            var hi = Math.Min(r.End, to);
            if (hi <= lo) continue;
            var share = (double)(hi - lo) / (r.End - r.Start);
            huge += r.HugeBacked * share;
            resident += r.Resident * share;
        }
        return Report((long)huge, (long)resident);
    }

    /// <summary>Huge when at least half of the resident bytes are in huge pages.</summary>
    private static PageReport Report(long huge, long resident) => new(resident > 0 && 2 * huge >= resident ? Pages.Huge : Pages.Plain, huge, resident);

    [DllImport("libc", EntryPoint = "prctl")]
    private static extern int Prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

    [DllImport("libc", EntryPoint = "madvise")]
    private static extern int Madvise(void* address, nuint length, int advice);
}
