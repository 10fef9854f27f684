"""Trains the text-generation example's model and exports it to ../Models/kjv.onnx (with the KV cache).

A small Llama (RMSNorm, rotary embeddings on interleaved pairs, grouped-query attention, SwiGLU, classifier tied to
the embedding) trained on the King James Bible with the BPE tokenizer prepare.sh made. Plain PyTorch (Debian's
python3-torch, with OpenBLAS selected: update-alternatives --set libblas.so.3-x86_64-linux-gnu
/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3). Run from this folder after ./prepare.sh:
    /usr/bin/python3 train.py --minutes 25
The ONNX model's I/O follows the past_key_values.N.key/value -> present.N.key/value convention Kiln's decoder
sessions use; its weights are initializers used as MatMul(x, W) ([in, out]) and the tied classifier is a Gemm.
"""
import argparse, math, subprocess, time
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--minutes", type=float, default=25)
p.add_argument("--dim", type=int, default=192)
p.add_argument("--layers", type=int, default=5)
p.add_argument("--heads", type=int, default=6)
p.add_argument("--kv-heads", type=int, default=2)
p.add_argument("--ffn", type=int, default=512)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--out", default="../Models/kjv.onnx")
args = p.parse_args()
torch.manual_seed(0)
torch.set_num_threads(2)
BOS = 1


def ids(path):
    """Each verse as [BOS] + its pieces, all verses in one stream (spm_encode is the reference tokenizer)."""
    out = subprocess.run(["spm_encode", "--model=corpus/kjv.model", "--output_format=id", path], check=True, capture_output=True, text=True).stdout
    stream = []
    for line in out.splitlines():
        stream.append(BOS)
        stream.extend(int(t) for t in line.split())
    return torch.tensor(stream, dtype=torch.long)


train, val = ids("corpus/train.txt"), ids("corpus/val.txt")
vocab = 2048
print(f"train {len(train):,} tokens, val {len(val):,} tokens")


class RMSNorm(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def linear(i, o):
    return torch.nn.Parameter(torch.randn(i, o) * (1 / math.sqrt(i)))  # stored [in, out]: used as x @ W


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        d, hd = args.dim, args.dim // args.heads
        self.attention_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)
        self.wq, self.wk, self.wv, self.wo = linear(d, d), linear(d, args.kv_heads * hd), linear(d, args.kv_heads * hd), linear(d, d)
        self.w1, self.w3, self.w2 = linear(d, args.ffn), linear(d, args.ffn), linear(args.ffn, d)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        b, s, _ = x.shape
        h, kvh, hd = args.heads, args.kv_heads, args.dim // args.heads
        a = self.attention_norm(x)
        q = rope((a @ self.wq).view(b, s, h, hd), cos, sin).transpose(1, 2)
        k = rope((a @ self.wk).view(b, s, kvh, hd), cos, sin).transpose(1, 2)
        v = (a @ self.wv).view(b, s, kvh, hd).transpose(1, 2)
        if past_k is not None:
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        t = k.shape[2]
        rep = h // kvh
        kr = k.unsqueeze(2).expand(b, kvh, rep, t, hd).reshape(b, h, t, hd)
        vr = v.unsqueeze(2).expand(b, kvh, rep, t, hd).reshape(b, h, t, hd)
        att = torch.softmax(q @ kr.transpose(2, 3) * (1 / math.sqrt(hd)) + mask, dim=-1)
        x = x + (att @ vr).transpose(1, 2).reshape(b, s, args.dim) @ self.wo
        f = self.ffn_norm(x)
        return x + (F.silu(f @ self.w1) * (f @ self.w3)) @ self.w2, k, v


def rope(x, cos, sin):
    """Rotary embedding on interleaved pairs (llama2.c layout): view as [..., d/2, 2], rotate, stack back."""
    b, s, h, hd = x.shape
    pairs = x.reshape(b, s, h, hd // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c, sn = cos.view(1, s, 1, hd // 2), sin.view(1, s, 1, hd // 2)
    return torch.stack([x0 * c - x1 * sn, x0 * sn + x1 * c], -1).reshape(b, s, h, hd)


class Llama(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_embeddings = torch.nn.Parameter(torch.randn(vocab, args.dim) * 0.02)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(args.layers))
        self.norm = RMSNorm(args.dim)
        hd = args.dim // args.heads
        self.register_buffer("freqs", 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd)), persistent=False)

    def forward(self, tokens, pasts=None):
        b, s = tokens.shape
        past = 0 if pasts is None else pasts[0].shape[2]
        pos = torch.arange(s) + past
        angles = pos.float()[:, None] * self.freqs[None, :]
        cos, sin = torch.cos(angles), torch.sin(angles)
        mask = torch.where(torch.arange(s + past)[None, :] > pos[:, None], torch.tensor(float("-inf")), torch.tensor(0.0))
        x = F.embedding(tokens, self.tok_embeddings)
        presents = []
        for i, layer in enumerate(self.layers):
            pk, pv = (None, None) if pasts is None else (pasts[2 * i], pasts[2 * i + 1])
            x, k, v = layer(x, cos, sin, mask, pk, pv)
            presents += [k, v]
        h = self.norm(x).reshape(b * s, args.dim)
        logits = F.linear(h, self.tok_embeddings).reshape(b, s, vocab)  # tied: Gemm(h, E, transB=1)
        return logits, presents


model = Llama()
params = sum(p.numel() for p in model.parameters())
print(f"{params:,} parameters ({params * 4 / 1e6:.1f} MB f32)")
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)


def batch(data, n):
    starts = torch.randint(0, len(data) - args.seq - 1, (n,))
    x = torch.stack([data[i:i + args.seq] for i in starts])
    y = torch.stack([data[i + 1:i + args.seq + 1] for i in starts])
    return x, y


@torch.no_grad()
def val_loss():
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(val) - args.seq - 1, args.seq):
        x, y = val[i:i + args.seq][None], val[i + 1:i + args.seq + 1][None]
        total += F.cross_entropy(model(x)[0].view(-1, vocab), y.view(-1), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


# Time-budgeted: warm-up, then cosine decay over the steps the measured speed allows.
budget, start, step, steps = args.minutes * 60, time.time(), 0, None
while True:
    if step == 10:
        steps = int(budget / ((time.time() - start) / 10))
        print(f"~{(time.time() - start) / 10:.2f} s/step: {steps} steps")
    if steps is not None and step >= steps:
        break
    lr = args.lr * min(1.0, (step + 1) / 50) * (0.5 * (1 + math.cos(math.pi * step / steps)) * 0.9 + 0.1 if steps else 1.0)
    for g in opt.param_groups:
        g["lr"] = lr
    x, y = batch(train, args.batch)
    loss = F.cross_entropy(model(x)[0].view(-1, vocab), y.view(-1))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step % 50 == 0:
        print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - start:.0f} s", flush=True)
    step += 1

loss = val_loss()
print(f"validation loss {loss:.4f} nats/token (perplexity {math.exp(loss):.1f}) after {step} steps, {time.time() - start:.0f} s")

# Export with the KV cache: input_ids and every layer's past in; logits and every layer's present out.
model.eval()
kvh, hd = args.kv_heads, args.dim // args.heads
names_in = ["input_ids"] + [f"past_key_values.{i}.{kv}" for i in range(args.layers) for kv in ("key", "value")]
names_out = ["logits"] + [f"present.{i}.{kv}" for i in range(args.layers) for kv in ("key", "value")]
dyn = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
for n in names_in[1:]:
    dyn[n] = {0: "batch", 2: "past_seq"}
for n in names_out[1:]:
    dyn[n] = {0: "batch", 2: "total_seq"}


class WithCache(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, *pasts):
        logits, presents = self.m(input_ids, list(pasts))
        return (logits, *presents)


example = (torch.tensor([[BOS, 5, 6]]), *[torch.zeros(1, kvh, 2, hd) for _ in range(2 * args.layers)])
torch.onnx.export(WithCache(model), example, args.out, input_names=names_in, output_names=names_out,
                  dynamic_axes=dyn, opset_version=17,
                  # Folding would store the tied classifier a second time, transposed; Kiln folds the Transpose instead.
                  do_constant_folding=False)
with open("train-log.txt", "w") as f:
    f.write(f"{params} parameters; {step} steps of {args.batch}x{args.seq} tokens; validation loss {loss:.4f} nats/token\n")
print("wrote", args.out)
