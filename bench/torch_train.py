#!/usr/bin/python3
"""PyTorch side of bench/train_bench.ts: tokens/s of one full MiniMind2 train step.

A self-contained PyTorch transcription of MiniMind2 (V2, dense) as trainer/train_pretrain.py runs
it on CPU: tied embeddings, pre-norm blocks with RMSNorm (eps 1e-5), rotate-half RoPE (theta 1e6),
GQA attention with a causal mask (torch 1.13 has no SDPA, so the explicit softmax path MiniMind
falls back to), SwiGLU MLP; loss = shifted cross-entropy (ignore -100); backward;
clip_grad_norm_(1.0); torch.optim.AdamW (lr 5e-4, weight decay 0.01); zero_grad. float32, random
token ids (the speed does not depend on them).

Run with Debian's interpreter and `python3-torch` (apt-get install -y python3-torch
libopenblas0-openmp); torch is never a dependency of the library:
    /usr/bin/python3 bench/torch_train.py --hidden_size 512 --num_hidden_layers 8 \
        --batch_size 4 --max_seq_len 256 --steps 5
Prints one JSON line. `--sweep` tries (OpenBLAS threads, torch threads) in {1, N}² in
subprocesses and reports the fastest: Debian's torch calls the system OpenBLAS, whose thread pool
can fight torch's own on a small machine.
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x.float() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


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

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd)
        q = q * cos[None, :, None] + rotate_half(q) * sin[None, :, None]
        k = k * cos[None, :, None] + rotate_half(k) * sin[None, :, None]
        rep = self.nh // self.nkv
        q = q.transpose(1, 2)  # (B, NH, T, HD)
        k = k.repeat_interleave(rep, dim=2).transpose(1, 2)
        v = v.repeat_interleave(rep, dim=2).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.hd)  # (B, NH, T, T)
        scores = scores + torch.full((t, t), -math.inf).triu(1)
        out = F.softmax(scores.float(), dim=-1).type_as(q) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.input_layernorm = RMSNorm(c.hidden, 1e-5)
        self.post_attention_layernorm = RMSNorm(c.hidden, 1e-5)
        inter = c.intermediate or 64 * ((int(c.hidden * 8 / 3) + 63) // 64)
        self.gate_proj = torch.nn.Linear(c.hidden, inter, bias=False)
        self.up_proj = torch.nn.Linear(c.hidden, inter, bias=False)
        self.down_proj = torch.nn.Linear(inter, c.hidden, bias=False)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        y = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class MiniMind(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(c.vocab, c.hidden)
        self.layers = torch.nn.ModuleList([Block(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.hidden, 1e-5)
        self.lm_head = torch.nn.Linear(c.hidden, c.vocab, bias=False)
        self.embed_tokens.weight = self.lm_head.weight  # tied, as MiniMind2
        cos, sin = rope_tables(c.hidden // c.heads, 4096, 1e6)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids, labels):
        t = ids.shape[1]
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, self.cos[:t], self.sin[:t])
        logits = self.lm_head(self.norm(h))
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)


def sweep(argv):
    n = os.cpu_count() or 1
    best = None
    for blas in sorted({1, n}):
        for threads in sorted({1, n}):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas), OMP_NUM_THREADS=str(threads))
            out = subprocess.run([sys.executable, __file__, *argv, "--threads", str(threads)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            r = dict(json.loads(out.strip().splitlines()[-1]), blas_threads=blas)
            if best is None or r["tokens_per_s"] > best["tokens_per_s"]:
                best = r
    print(json.dumps(dict(best, best_of="sweep")), flush=True)


def main():
    if "--sweep" in sys.argv:
        return sweep([a for a in sys.argv[1:] if a != "--sweep"])
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden_size", type=int, default=512)
    ap.add_argument("--num_hidden_layers", type=int, default=8)
    ap.add_argument("--num_attention_heads", type=int, default=8)
    ap.add_argument("--num_key_value_heads", type=int, default=2)
    ap.add_argument("--intermediate_size", type=int, default=0)
    ap.add_argument("--vocab_size", type=int, default=6400)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--max_seq_len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    c = argparse.Namespace(hidden=a.hidden_size, layers=a.num_hidden_layers, heads=a.num_attention_heads,
                           kv_heads=a.num_key_value_heads, vocab=a.vocab_size, intermediate=a.intermediate_size)
    model = MiniMind(c).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    ids = torch.randint(3, a.vocab_size, (a.batch_size, a.max_seq_len))
    times = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model(ids, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * sum(times) / len(times)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": a.threads,
        "blas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0),
        "hidden_size": a.hidden_size, "num_hidden_layers": a.num_hidden_layers,
        "params": sum(p.numel() for p in model.parameters()),
        "batch_size": a.batch_size, "max_seq_len": a.max_seq_len, "steps": a.steps,
        "ms_per_step": round(ms, 1),
        "tokens_per_s": round(a.batch_size * a.max_seq_len / (ms / 1000), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
