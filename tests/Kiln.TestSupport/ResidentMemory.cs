using System.Globalization;
using Kiln.Runtime;

namespace Kiln.TestSupport;

/// <summary>How much of a mapping this process holds resident, read from /proc/self/smaps (Linux only).</summary>
public static class ResidentMemory
{
    public static bool Measurable => OperatingSystem.IsLinux() && File.Exists("/proc/self/smaps");

    /// <summary>Resident bytes of the mappings that lie inside <paramref name="file"/>'s view.</summary>
    public static long Of(MappedFile file)
    {
        ulong from = (ulong)file.Address, to = from + (ulong)file.Length;
        long total = 0;
        var inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            var dash = line.IndexOf('-');
            var space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var end))
            {
                inside = start < to && end > from;
                continue;
            }
            if (inside && line.StartsWith("Rss:", StringComparison.Ordinal))
                total += long.Parse(line.AsSpan(4).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
        }
        return total;
    }
}
