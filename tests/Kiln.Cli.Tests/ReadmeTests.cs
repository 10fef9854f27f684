using System.Diagnostics;
using Kiln.TestSupport;

namespace Kiln.Cli.Tests;

/// <summary>
/// The README's test command works on a fresh Debian machine as root (no sudo there) and as a sudo user: its
/// installer is run against stub commands (id, dpkg, apt-get, sudo) that record what they were asked to do.
/// </summary>
public sealed class ReadmeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-readme-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static string Script => Path.Combine(Fixtures.RepoRoot, ".ci", "install-test-deps");

    [Fact]
    public void The_readme_test_command_is_the_one_ci_runs()
    {
        var readme = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "README.md"));
        Assert.Contains("bash .ci/install-test-deps && dotnet test Compiler.sln", readme);
        Assert.DoesNotContain("sudo apt-get", readme);
        var ci = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, ".ci", "run"));
        Assert.Contains("bash .ci/install-test-deps", ci);
        Assert.Contains("dotnet test Compiler.sln", ci);
    }

    private (int Code, string Log, string Err) RunInstaller(int uid, bool withSudo)
    {
        if (!OperatingSystem.IsLinux()) return (0, "", "");
        var bin = Path.Combine(_dir, $"bin-{uid}-{withSudo}");
        Directory.CreateDirectory(bin);
        var log = Path.Combine(bin, "calls.log");
        void Stub(string name, string body)
        {
            var path = Path.Combine(bin, name);
            File.WriteAllText(path, "#!/bin/bash\n" + body + "\n");
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        Stub("id", "echo " + uid);
        Stub("dpkg", "exit 1"); // zlib1g-dev is missing (and no clang or gcc on this PATH)
        Stub("apt-get", $"echo \"apt-get $*\" >> {log}");
        Stub("env", $"echo \"env $1\" >> {log}; shift; \"$@\"");
        if (withSudo) Stub("sudo", $"echo \"sudo $1\" >> {log}; \"$@\"");
        var psi = new ProcessStartInfo("/bin/bash", [Script]) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        psi.Environment["PATH"] = bin;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, File.Exists(log) ? File.ReadAllText(log) : "", err);
    }

    [Fact]
    public void As_root_it_installs_with_apt_get_directly()
    {
        if (!OperatingSystem.IsLinux()) return;
        var (code, log, err) = RunInstaller(0, withSudo: false);
        Assert.True(code == 0, err);
        Assert.Contains("apt-get update", log);
        Assert.Contains("apt-get install -y -qq zlib1g-dev clang", log);
        Assert.DoesNotContain("sudo", log);
    }

    [Fact]
    public void As_a_user_it_installs_through_sudo_or_says_what_to_install()
    {
        if (!OperatingSystem.IsLinux()) return;
        var (code, log, err) = RunInstaller(1000, withSudo: true);
        Assert.True(code == 0, err);
        Assert.Contains("sudo env", log);
        Assert.Contains("apt-get install -y -qq zlib1g-dev clang", log);

        (code, log, err) = RunInstaller(1001, withSudo: false);
        Assert.Equal(1, code);
        Assert.Contains("not root and no sudo: install zlib1g-dev clang as root", err);
        Assert.Equal("", log);
    }
}
