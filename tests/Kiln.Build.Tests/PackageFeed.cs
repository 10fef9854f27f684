using System.Diagnostics;
using Kiln.TestSupport;

namespace Kiln.Build.Tests;

/// <summary>
/// Packs Kiln.Runtime and Kiln.Build from this checkout into a folder feed, once for the test class, and runs
/// <c>dotnet</c> against projects made outside the repository. Packages restore into a private folder, so a
/// package cached by an earlier run with the same version is never used instead.
/// </summary>
public sealed class PackageFeed : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "kiln-build-tests-" + Guid.NewGuid().ToString("N")[..8]);

    public string Feed => Path.Combine(Root, "feed");

    public string Packages => Path.Combine(Root, "packages");

    public PackageFeed()
    {
        Directory.CreateDirectory(Feed);
        foreach (var project in new[] { "src/Kiln.Runtime", "src/Kiln.Build" })
        {
            var (code, log) = Dotnet($"pack {Path.Combine(Fixtures.RepoRoot, project)} -c Release -o {Feed} -nodeReuse:false", Fixtures.RepoRoot);
            if (code != 0) throw new InvalidOperationException($"dotnet pack {project} failed:\n{log}");
        }
    }

    /// <summary>A fresh app folder with a nuget.config naming the feed (the machine's other sources stay).</summary>
    public string NewApp(string name)
    {
        var dir = Path.Combine(Root, name);
        Directory.CreateDirectory(Path.Combine(dir, "Models"));
        File.WriteAllText(Path.Combine(dir, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="kiln-local" value="{Feed}" />
              </packageSources>
            </configuration>
            """);
        return dir;
    }

    public (int Code, string Log) Dotnet(string arguments, string workingDirectory) => DotnetProcess.Run(arguments, workingDirectory, Packages);

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); }
        catch (IOException) { }
    }
}

/// <summary>Runs <c>dotnet</c> and returns its exit code with stdout and stderr.</summary>
public static class DotnetProcess
{
    /// <param name="packages">a private NuGet packages folder, or null for the machine's</param>
    public static (int Code, string Log) Run(string arguments, string workingDirectory, string? packages = null)
    {
        var start = new ProcessStartInfo("dotnet", arguments)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (packages is not null) start.Environment["NUGET_PACKAGES"] = packages;
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        // The outer test run's MSBuild settings must not leak into the app's build.
        foreach (var key in new[] { "MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "MSBuildSDKsPath", "VSTEST_HOST_DEBUG" }) start.Environment.Remove(key);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, stdout.Result + stderr.Result);
    }
}
