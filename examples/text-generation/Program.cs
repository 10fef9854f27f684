using System.Globalization;
using Kiln.Runtime.Decoding;
using Microsoft.ML.Tokenizers;

// Streams King James-style text from a small Llama trained for this example (train/), compiled into this app by
// Kiln during the build (<KilnModel> in the .csproj). Usage:
//   TextGeneration ["prompt"] [--tokens N] [--temperature T] [--top-p P] [--seed S] [--greedy] [--ids] [--model int4|f32]
// --ids also prints the generated token ids (one line, after the text). --model picks the compiled model: int4 (the
// default: GPTQ, 4-bit weights in groups of 32, calibrated on training verses; 1.75 MB of weights) or f32 (11 MB).
var prompt = "And God said";
int tokens = 120, seed = 1;
float temperature = 0.8f, topP = 0.95f;
bool greedy = false, printIds = false;
var which = "int4";
for (var i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--tokens": tokens = int.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--temperature": temperature = float.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--top-p": topP = float.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--seed": seed = int.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--greedy": greedy = true; break;
        case "--ids": printIds = true; break;
        case "--model": which = Next(); break;
        default:
            if (args[i].StartsWith("--", StringComparison.Ordinal)) { Console.Error.WriteLine($"unknown option {args[i]}"); return 1; }
            prompt = args[i];
            break;
    }
}

// The sentencepiece BPE model train/prepare.sh made; LlamaTokenizer encodes as spm_encode does.
using var tokenizerFile = File.OpenRead(Path.Combine(AppContext.BaseDirectory, "tokenizer.model"));
var tokenizer = LlamaTokenizer.Create(tokenizerFile, addBeginOfSentence: true, addEndOfSentence: false);
var bos = tokenizer.BeginningOfSentenceId;

var options = new DecoderOptions { MaxContext = 512, Seed = seed };
using IDisposable model = which switch
{
    "int4" => TextGeneration.KjvModelInt4.Load(),
    "f32" => TextGeneration.KjvModel.Load(),
    _ => throw new ArgumentException($"--model is int4 or f32, not '{which}'"),
};
using var session = model switch
{
    TextGeneration.KjvModelInt4 m => m.CreateSession(options),
    TextGeneration.KjvModel m => m.CreateSession(options),
    _ => throw new InvalidOperationException(),
};
var ids = tokenizer.EncodeToIds(prompt).Select(id => (long)id).ToList();
ISampler sampler = greedy ? GreedySampler.Instance : new TemperatureSampler(temperature, topP: topP);

// Each verse starts with BOS: a generated BOS ends the line. Pieces are decoded per verse so spaces come out right.
Console.Write(prompt);
var verse = new List<int>(ids.Skip(1).Select(id => (int)id));
var shown = tokenizer.Decode(verse)?.Length ?? 0;
var generated = new List<long>();
foreach (var token in session.Generate(ids, tokens, sampler))
{
    generated.Add(token);
    if (token == bos)
    {
        Console.WriteLine();
        verse.Clear();
        shown = 0;
        continue;
    }
    verse.Add((int)token);
    var text = tokenizer.Decode(verse) ?? "";
    if (text.Length > shown) Console.Write(text[shown..]);
    shown = text.Length;
}
Console.WriteLine();
if (printIds) Console.WriteLine("ids: " + string.Join(" ", generated));
return 0;
