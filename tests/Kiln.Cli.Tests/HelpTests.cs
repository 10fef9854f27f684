using System.Text.RegularExpressions;

namespace Kiln.Cli.Tests;

/// <summary>Help texts match the commands: placeholders say what an option takes, descriptions name the options they depend on.</summary>
public sealed partial class HelpTests
{
    public static TheoryData<string> Commands() => new("inspect", "dump", "export", "conformance", "run", "compile", "bench", "eval");

    [GeneratedRegex(@"^\s+(?:-\w, )?--(?<name>[\w-]+) <(?<placeholder>[^>]+)>", RegexOptions.Multiline)]
    private static partial Regex OptionWithValue();

    [Theory]
    [MemberData(nameof(Commands))]
    public void Every_placeholder_says_what_the_option_takes(string command)
    {
        var r = CliRunner.Run(command, "--help");
        Assert.Equal(0, r.ExitCode);
        var options = OptionWithValue().Matches(r.StdOut).ToList();
        if (command != "inspect") Assert.NotEmpty(options); // inspect takes only --json
        // System.CommandLine's default placeholder is the option's own name (--data <data>): never left so.
        foreach (var m in options)
            Assert.True(m.Groups["placeholder"].Value != m.Groups["name"].Value, $"kiln {command}: --{m.Groups["name"].Value} <{m.Groups["placeholder"].Value}>");
        Assert.DoesNotMatch(@"<[a-z]+>", r.StdOut.Split("Options:")[0]); // arguments in capitals too (<MODEL>, <DIR>)
    }

    [Theory]
    [InlineData("inspect", new string[0], new[] { "dump" })]
    [InlineData("conformance", new[] { "--engine", "--filter", "--tsv", "--time-limit" }, new string[0])]
    [InlineData("bench", new[] { "--ort", "--baseline-passes", "--data", "--threads", "--pages", "--json" }, new string[0])]
    [InlineData("run", new[] { "--engine", "--passes", "--atol", "--rtol" }, new string[0])]
    public void Descriptions_name_the_options_they_have_and_nothing_else(string command, string[] mentioned, string[] absent)
    {
        var help = CliRunner.Run(command, "--help").StdOut;
        var text = help.Split("Usage:")[0] + help.Split("Arguments:").Last().Split("Options:")[0];
        foreach (var m in mentioned) Assert.Contains(m, text);
        foreach (var a in absent) Assert.DoesNotContain(a, text);
    }
}
