namespace Kiln.Runtime.Kernels;

/// <summary>
/// GridSample on 4-D inputs: X [N, C, H, W] sampled at grid [N, Ho, Wo, 2] of normalized (x, y) in [-1, 1];
/// nearest / linear / cubic, padding zeros / border / reflection, align_corners (computed in double).
/// </summary>
public static class GridSample
{
    public static Tensor Run(Tensor x, Tensor grid, string mode, string padding, bool alignCorners)
    {
        if (x.Rank != 4 || grid.Rank != 4 || grid.Shape[3] != 2)
            throw new KernelException($"GridSample supports 4-D inputs with a [N, H, W, 2] grid; got {x} and {grid}");
        int n = x.Shape[0], c = x.Shape[1], h = x.Shape[2], w = x.Shape[3], ho = grid.Shape[1], wo = grid.Shape[2];
        var img = x.ToDoubles();
        var g = grid.ToDoubles();
        var res = new double[(long)n * c * ho * wo];
        double xMin = alignCorners ? 0 : -0.5, xMax = alignCorners ? w - 1 : w - 0.5;
        double yMin = alignCorners ? 0 : -0.5, yMax = alignCorners ? h - 1 : h - 0.5;
        for (var b = 0; b < n; b++)
            for (var oy = 0; oy < ho; oy++)
                for (var ox = 0; ox < wo; ox++)
                {
                    var gi = (((long)b * ho + oy) * wo + ox) * 2;
                    var px = Denormalize(g[gi], w, alignCorners);
                    var py = Denormalize(g[gi + 1], h, alignCorners);
                    if (mode == "nearest")
                    {
                        px = Math.Round(px, MidpointRounding.ToEven);
                        py = Math.Round(py, MidpointRounding.ToEven);
                    }
                    if (px < xMin || px > xMax || py < yMin || py > yMax)
                    {
                        if (padding == "border") { px = Math.Clamp(px, 0, w - 1); py = Math.Clamp(py, 0, h - 1); }
                        else if (padding == "reflection") { px = Reflect(px, xMin, xMax); py = Reflect(py, yMin, yMax); }
                    }
                    for (var ch = 0; ch < c; ch++)
                    {
                        var plane = ((long)b * c + ch) * h * w;
                        double Pixel(double r, double col)
                        {
                            int ri, ci;
                            switch (padding)
                            {
                                case "zeros":
                                    if (r < 0 || r > h - 1 || col < 0 || col > w - 1) return 0;
                                    ri = (int)r; ci = (int)col;
                                    break;
                                case "border":
                                    ri = (int)Math.Clamp(r, 0, h - 1); ci = (int)Math.Clamp(col, 0, w - 1);
                                    break;
                                default:
                                    ri = (int)Reflect(r, yMin, yMax); ci = (int)Reflect(col, xMin, xMax);
                                    ri = Math.Clamp(ri, 0, h - 1); ci = Math.Clamp(ci, 0, w - 1);
                                    break;
                            }
                            return img[plane + (long)ri * w + ci];
                        }
                        double v;
                        switch (mode)
                        {
                            case "nearest":
                                v = Pixel(py, px);
                                break;
                            case "linear":
                                {
                                    double x1 = Math.Floor(px), y1 = Math.Floor(py), x2 = x1 + 1, y2 = y1 + 1;
                                    double dx2 = x2 - px, dx1 = px - x1, dy2 = y2 - py, dy1 = py - y1;
                                    v = dy2 * (dx2 * Pixel(y1, x1) + dx1 * Pixel(y1, x2)) + dy1 * (dx2 * Pixel(y2, x1) + dx1 * Pixel(y2, x2));
                                    break;
                                }
                            case "cubic":
                                {
                                    double x0 = Math.Floor(px) - 1, y0 = Math.Floor(py) - 1;
                                    var cx = Coefficients(px - x0 - 1);
                                    var cy = Coefficients(py - y0 - 1);
                                    v = 0;
                                    for (var i = 0; i < 4; i++)
                                    {
                                        double row = 0;
                                        for (var j = 0; j < 4; j++) row += cx[j] * Pixel(y0 + i, x0 + j);
                                        v += cy[i] * row;
                                    }
                                    break;
                                }
                            default:
                                throw new KernelException($"GridSample mode '{mode}' is not one of nearest, linear, cubic");
                        }
                        res[(((long)b * c + ch) * ho + oy) * wo + ox] = v;
                    }
                }
        return Movement.FromDoubles(x.Type, [n, c, ho, wo], res);
    }

    private static double Denormalize(double v, int length, bool alignCorners) =>
        alignCorners ? (v + 1) / 2 * (length - 1) : ((v + 1) * length - 1) / 2;

    private static double Reflect(double v, double lo, double hi)
    {
        var range = hi - lo;
        if (range <= 0) return lo;
        if (v < lo)
        {
            var d = lo - v;
            var k = (int)(d / range);
            var r = d - k * range;
            return k % 2 == 0 ? lo + r : hi - r;
        }
        if (v > hi)
        {
            var d = v - hi;
            var k = (int)(d / range);
            var r = d - k * range;
            return k % 2 == 0 ? hi - r : lo + r;
        }
        return v;
    }

    private static double[] Coefficients(double t)
    {
        const double a = -0.75;
        t = Math.Abs(t);
        return
        [
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        ];
    }
}
