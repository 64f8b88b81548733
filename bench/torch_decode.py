#!/usr/bin/python3
"""PyTorch side of bench/serve_bench.ts: decode tokens/s of the same MiniMind2 architecture.

A self-contained PyTorch transcription of MiniMind2 (dense): tied embeddings, pre-norm blocks with
RMSNorm, rotate-half RoPE (theta 1e6), GQA attention with a KV cache, SwiGLU MLP. Random weights
(the speed does not depend on them). It measures what the server measures: after a prefill of the
same 18-token prompt, decode N tokens one step at a time with top-k 50 / top-p 0.92 sampling, for
one sequence and for a batch of 8.

Run with Debian's interpreter and `python3-torch` (apt-get install -y python3-torch):
    /usr/bin/python3 bench/torch_decode.py --hidden_size 512 --num_hidden_layers 8 --tokens 64
Prints one JSON line per measurement. `--sweep` runs every (OpenBLAS threads, torch threads)
combination in a subprocess and reports PyTorch's best per batch size: Debian's torch links the
system OpenBLAS, and on a small machine their two thread pools can fight (5x slower). torch is never
a dependency of the library.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim, end, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs = torch.outer(torch.arange(end).float(), inv)
    return torch.cat([freqs.cos(), freqs.cos()], -1), torch.cat([freqs.sin(), freqs.sin()], -1)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c.heads, c.kv_heads, c.hidden // c.heads
        self.q_proj = torch.nn.Linear(c.hidden, self.nh * self.hd, bias=False)
        self.k_proj = torch.nn.Linear(c.hidden, self.nkv * self.hd, bias=False)
        self.v_proj = torch.nn.Linear(c.hidden, self.nkv * self.hd, bias=False)
        self.o_proj = torch.nn.Linear(self.nh * self.hd, c.hidden, bias=False)

    def forward(self, x, cos, sin, past):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd)
        q = q * cos[:, :, None] + rotate_half(q) * sin[:, :, None]
        k = k * cos[:, :, None] + rotate_half(k) * sin[:, :, None]
        if past is not None:
            k = torch.cat([past[0], k], 1)
            v = torch.cat([past[1], v], 1)
        present = (k, v)
        rep = self.nh // self.nkv
        kk = k.repeat_interleave(rep, dim=2).transpose(1, 2)
        vv = v.repeat_interleave(rep, dim=2).transpose(1, 2)
        scores = q.transpose(1, 2) @ kk.transpose(-2, -1) / math.sqrt(self.hd)  # (B, NH, T, S)
        if t > 1:  # prefill: causal over the new steps (torch 1.13 has no SDPA)
            s = kk.shape[2]
            scores = scores + torch.full((t, s), -math.inf).triu(s - t + 1)
        out = scores.softmax(-1) @ vv  # (B, NH, T, HD)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), present


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.input_layernorm = RMSNorm(c.hidden, 1e-5)
        self.post_attention_layernorm = RMSNorm(c.hidden, 1e-5)
        inter = 64 * ((int(c.hidden * 8 / 3) + 63) // 64)
        self.gate_proj = torch.nn.Linear(c.hidden, inter, bias=False)
        self.up_proj = torch.nn.Linear(c.hidden, inter, bias=False)
        self.down_proj = torch.nn.Linear(inter, c.hidden, bias=False)

    def forward(self, x, cos, sin, past):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, past)
        h = x + a
        y = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y)), present


class MiniMind(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(c.vocab, c.hidden)
        self.layers = torch.nn.ModuleList([Block(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.hidden, 1e-5)
        cos, sin = rope_tables(c.hidden // c.heads, 4096, 1e6)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids, pos, past):
        h = self.embed_tokens(ids)
        cos, sin = self.cos[pos], self.sin[pos]  # (B, T, HD)
        presents = []
        for i, layer in enumerate(self.layers):
            h, p = layer(h, cos, sin, past[i] if past else None)
            presents.append(p)
        return self.norm(h)[:, -1] @ self.embed_tokens.weight.T, presents


def sample(logits, temperature=0.7, top_k=50, top_p=0.92):
    logits = logits / temperature
    kth = torch.topk(logits, top_k).values[:, -1:]
    logits = logits.masked_fill(logits < kth, -math.inf)
    sorted_logits, idx = torch.sort(logits, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum > top_p
    remove[:, 1:] = remove[:, :-1].clone()
    remove[:, 0] = False
    logits = logits.scatter(1, idx, sorted_logits.masked_fill(remove, -math.inf))
    return torch.multinomial(logits.softmax(-1), 1)


@torch.inference_mode()
def decode(model, batch, prompt_len, tokens):
    ids = torch.randint(3, 6400, (batch, prompt_len))
    pos = torch.arange(prompt_len).expand(batch, -1)
    logits, past = model(ids, pos, None)
    nxt = sample(logits)
    t0 = time.perf_counter()
    for s in range(tokens - 1):
        logits, past = model(nxt, torch.full((batch, 1), prompt_len + s), past)
        nxt = sample(logits)
    return batch * (tokens - 1) / (time.perf_counter() - t0)


def sweep(argv):
    import subprocess
    import sys
    best = {}
    for blas in (1, 2):
        for threads in (1, 2):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas), OMP_NUM_THREADS=str(threads))
            out = subprocess.run([sys.executable, __file__, *argv, "--threads", str(threads)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                r = dict(json.loads(line), blas_threads=blas)
                if r["batch"] not in best or r["decode_tokens_per_s"] > best[r["batch"]]["decode_tokens_per_s"]:
                    best[r["batch"]] = r
    for r in best.values():
        print(json.dumps(dict(r, best_of="sweep")), flush=True)


def main():
    import sys
    if "--sweep" in sys.argv:
        return sweep([a for a in sys.argv[1:] if a != "--sweep"])
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden_size", type=int, default=512)
    ap.add_argument("--num_hidden_layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv_heads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt_len", type=int, default=18)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    c = argparse.Namespace(hidden=a.hidden_size, layers=a.num_hidden_layers, heads=a.heads,
                           kv_heads=a.kv_heads, vocab=6400)
    model = MiniMind(c).eval()
    decode(model, 1, a.prompt_len, 8)  # warm-up
    for batch in (1, 8):
        best = max(decode(model, batch, a.prompt_len, a.tokens) for _ in range(a.repeat))
        print(json.dumps({
            "impl": "pytorch", "torch": torch.__version__, "threads": a.threads,
            "hidden_size": a.hidden_size, "num_hidden_layers": a.num_hidden_layers,
            "batch": batch, "tokens": a.tokens, "decode_tokens_per_s": round(best, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
