using System.Globalization;
using Kiln.Runtime;
using StbImageSharp;
using StbImageWriteSharp;

// Finds text lines in an image with PaddleOCR's detector, tells upright lines from upside-down ones with its
// orientation classifier (both compiled into this app by Kiln: <KilnModel> in Ocr.csproj), prints the boxes and
// writes IMAGE.annotated.png (green: upright, red: upside down). Usage: Ocr IMAGE [--out FILE]
if (args.Length == 0) { Console.Error.WriteLine("usage: Ocr IMAGE [--out FILE.png]"); return 1; }
var path = args[0];
var outPath = args.Length >= 3 && args[1] == "--out" ? args[2] : Path.ChangeExtension(path, ".annotated.png");
if (!File.Exists(path)) { Console.Error.WriteLine($"{path}: no such file"); return 1; }
ImageResult image;
using (var stream = File.OpenRead(path)) image = ImageResult.FromStream(stream, StbImageSharp.ColorComponents.RedGreenBlueAlpha);

using var detector = Ocr.TextDetector.Load();
using var orientation = Ocr.TextOrientation.Load();
var boxes = TextBoxes.Detect(detector, image);
Console.WriteLine($"{path}: {image.Width}×{image.Height}, {boxes.Count} text boxes");
foreach (var box in boxes)
{
    var (upsideDown, score) = TextBoxes.Orientation(orientation, image, box);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  box x={box.X} y={box.Y} w={box.W} h={box.H} score={box.Score:0.00}  orientation {(upsideDown ? 180 : 0)}° ({score:0.00})"));
    TextBoxes.Draw(image, box, upsideDown ? ((byte)255, (byte)40, (byte)40) : ((byte)20, (byte)170, (byte)60));
}
using (var output = File.Create(outPath))
    new ImageWriter().WritePng(image.Data, image.Width, image.Height, StbImageWriteSharp.ColorComponents.RedGreenBlueAlpha, output);
Console.WriteLine($"wrote {outPath}");
return 0;

/// <summary>An axis-aligned text box in image pixels with the detector's mean probability inside it.</summary>
internal sealed record TextBox(int X, int Y, int W, int H, float Score);

/// <summary>PaddleOCR's pre- and post-processing around the two compiled models (DB detection, 0°/180° classification).</summary>
internal static class TextBoxes
{
    // ImageNet statistics, applied to B, G, R in that order as PaddleOCR's (OpenCV-read) training data was.
    private static readonly float[] Mean = [0.485f, 0.456f, 0.406f];
    private static readonly float[] Std = [0.229f, 0.224f, 0.225f];

    /// <summary>
    /// Runs the detector on the image resized so each side is a multiple of 32 (the longer at most 960), binarizes
    /// its probability map at 0.3, and turns each 8-connected region whose mean probability is at least 0.6 into a
    /// box grown by DB's unclip distance (area · 1.5 / perimeter), mapped back to the image.
    /// </summary>
    public static List<TextBox> Detect(Ocr.TextDetector detector, ImageResult image)
    {
        var scale = Math.Min(1.0, 960.0 / Math.Max(image.Width, image.Height));
        int w = Math.Max(32, (int)Math.Round(image.Width * scale / 32) * 32), h = Math.Max(32, (int)Math.Round(image.Height * scale / 32) * 32);
        var input = new float[3 * h * w];
        for (var y = 0; y < h; y++)
            for (var x = 0; x < w; x++)
            {
                var (r, g, b) = Sample(image, (x + 0.5) * image.Width / w - 0.5, (y + 0.5) * image.Height / h - 0.5);
                float[] bgr = [b, g, r];
                for (var c = 0; c < 3; c++) input[(c * h + y) * w + x] = (bgr[c] / 255f - Mean[c]) / Std[c];
            }
        var map = ((Tensor)detector.RunValues([Tensor.FromArray(DType.F32, [1, 3, h, w], input)])[0]!).Span<float>().ToArray();
        var seen = new bool[map.Length];
        var boxes = new List<TextBox>();
        var stack = new Stack<int>();
        for (var start = 0; start < map.Length; start++)
        {
            if (seen[start] || map[start] < 0.3f) continue;
            int x0 = int.MaxValue, y0 = int.MaxValue, x1 = -1, y1 = -1, count = 0;
            double sum = 0;
            stack.Push(start);
            seen[start] = true;
            while (stack.Count > 0)
            {
                var at = stack.Pop();
                int px = at % w, py = at / w;
                (x0, y0, x1, y1) = (Math.Min(x0, px), Math.Min(y0, py), Math.Max(x1, px), Math.Max(y1, py));
                sum += map[at];
                count++;
                for (var dy = -1; dy <= 1; dy++)
                    for (var dx = -1; dx <= 1; dx++)
                    {
                        int nx = px + dx, ny = py + dy;
                        if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                        var n = ny * w + nx;
                        if (seen[n] || map[n] < 0.3f) continue;
                        seen[n] = true;
                        stack.Push(n);
                    }
            }
            double bw = x1 - x0 + 1, bh = y1 - y0 + 1, score = sum / count;
            if (count < 10 || Math.Min(bw, bh) < 3 || score < 0.6) continue;
            var grow = bw * bh * 1.5 / (2 * (bw + bh));
            double sx = (double)image.Width / w, sy = (double)image.Height / h;
            int bx0 = Math.Clamp((int)Math.Floor((x0 - grow) * sx), 0, image.Width - 1), by0 = Math.Clamp((int)Math.Floor((y0 - grow) * sy), 0, image.Height - 1);
            int bx1 = Math.Clamp((int)Math.Ceiling((x1 + 1 + grow) * sx), 1, image.Width), by1 = Math.Clamp((int)Math.Ceiling((y1 + 1 + grow) * sy), 1, image.Height);
            boxes.Add(new TextBox(bx0, by0, bx1 - bx0, by1 - by0, (float)score));
        }
        return boxes.OrderBy(b => b.Y).ThenBy(b => b.X).ToList();
    }

    /// <summary>The classifier on the box resized to height 48 (width at most 192, the rest zero): true when it says 180°.</summary>
    public static (bool UpsideDown, float Score) Orientation(Ocr.TextOrientation classifier, ImageResult image, TextBox box)
    {
        const int H = 48, W = 192;
        var width = Math.Clamp((int)Math.Ceiling(H * (double)box.W / box.H), 1, W);
        var input = new float[3 * H * W];
        for (var y = 0; y < H; y++)
            for (var x = 0; x < width; x++)
            {
                var (r, g, b) = Sample(image, box.X + (x + 0.5) * box.W / width - 0.5, box.Y + (y + 0.5) * box.H / H - 0.5);
                float[] bgr = [b, g, r];
                for (var c = 0; c < 3; c++) input[(c * H + y) * W + x] = (bgr[c] / 255f - 0.5f) / 0.5f;
            }
        var probs = ((Tensor)classifier.RunValues([Tensor.FromArray(DType.F32, [1, 3, H, W], input)])[0]!).Span<float>();
        return (probs[1] > probs[0], Math.Max(probs[0], probs[1]));
    }

    /// <summary>Bilinear RGB at a fractional pixel position (clamped at the edges).</summary>
    private static (float R, float G, float B) Sample(ImageResult image, double fx, double fy)
    {
        fx = Math.Clamp(fx, 0, image.Width - 1);
        fy = Math.Clamp(fy, 0, image.Height - 1);
        int x0 = (int)fx, y0 = (int)fy, x1 = Math.Min(x0 + 1, image.Width - 1), y1 = Math.Min(y0 + 1, image.Height - 1);
        double ax = fx - x0, ay = fy - y0;
        float Channel(int c)
        {
            double P(int x, int y) => image.Data[(y * image.Width + x) * 4 + c];
            return (float)((P(x0, y0) * (1 - ax) + P(x1, y0) * ax) * (1 - ay) + (P(x0, y1) * (1 - ax) + P(x1, y1) * ax) * ay);
        }
        return (Channel(0), Channel(1), Channel(2));
    }

    /// <summary>A 2-pixel rectangle outline in the RGBA image.</summary>
    public static void Draw(ImageResult image, TextBox box, (byte R, byte G, byte B) color)
    {
        void Set(int x, int y)
        {
            if (x < 0 || y < 0 || x >= image.Width || y >= image.Height) return;
            var at = (y * image.Width + x) * 4;
            (image.Data[at], image.Data[at + 1], image.Data[at + 2], image.Data[at + 3]) = (color.R, color.G, color.B, 255);
        }
        for (var t = 0; t < 2; t++)
        {
            for (var x = box.X; x < box.X + box.W; x++) { Set(x, box.Y + t); Set(x, box.Y + box.H - 1 - t); }
            for (var y = box.Y; y < box.Y + box.H; y++) { Set(box.X + t, y); Set(box.X + box.W - 1 - t, y); }
        }
    }
}
