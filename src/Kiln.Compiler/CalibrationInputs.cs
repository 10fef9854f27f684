using Kiln.Ir;
using Kiln.Onnx;
using Kiln.Passes;

namespace Kiln.Compiler;

/// <summary>Calibration data as the tools take it (<c>--calibration</c>): loaded for a graph, and reported when no pass used it.</summary>
public static class CalibrationInputs
{
    /// <summary>Calibration inputs for <paramref name="graph"/> from a folder or token file; null when no path is given.</summary>
    public static CalibrationSet? Load(string? path, Graph graph) =>
        path is null ? null : new(path, CalibrationFiles.Load(path, graph, CalibrationSet.RowsPerSample));

    /// <summary>Says so on stderr when calibration data was given but no pass of the pipeline read it: an option is never dropped silently.</summary>
    public static void NoteUnused(string? path, IEnumerable<PassReport> reports, string pipeline)
    {
        if (path is not null && !reports.Any(r => r.UsedCalibration))
            Console.Error.WriteLine($"note: --calibration {path} was not used: no pass of '{pipeline}' calibrates");
    }
}
