"""A self-contained PyTorch transcription of MiniMind2 (V2, dense), shared by the PyTorch sides of
the benchmarks (bench/torch_train.py, bench/torch_decode.py): tied embeddings, pre-norm blocks
with RMSNorm (eps 1e-5), rotate-half RoPE (theta 1e6), GQA attention with a causal mask and an
optional KV cache (torch 1.13 has no SDPA, so the explicit softmax path MiniMind falls back to),
SwiGLU MLP. Written for these benchmarks, not copied from MiniMind; torch is never a dependency of
the library. Also holds the configuration sweep both scripts use (PyTorch at its best: Debian's
torch calls the system OpenBLAS; the OpenMP build shares torch's thread pool, the pthread build's
pool can fight it on a small machine).
"""
import json
import math
import os
import subprocess
import sys

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

    def forward(self, x, cos, sin, past=None):
        # cos, sin: (B, T, HD); past: (k, v) each (B, S0, NKV, HD) or None
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
        kk = k.repeat_interleave(rep, dim=2).transpose(1, 2)  # (B, NH, S, HD)
        vv = v.repeat_interleave(rep, dim=2).transpose(1, 2)
        scores = q.transpose(1, 2) @ kk.transpose(-2, -1) / math.sqrt(self.hd)  # (B, NH, T, S)
        if t > 1:  # causal over the new steps
            s = kk.shape[2]
            scores = scores + torch.full((t, s), -math.inf, device=x.device).triu(s - t + 1)
        out = F.softmax(scores.float(), dim=-1).type_as(q) @ vv  # (B, NH, T, HD)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), present


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.input_layernorm = RMSNorm(c.hidden, 1e-5)
        self.post_attention_layernorm = RMSNorm(c.hidden, 1e-5)
        inter = getattr(c, "intermediate", 0) or 64 * ((int(c.hidden * 8 / 3) + 63) // 64)
        self.gate_proj = torch.nn.Linear(c.hidden, inter, bias=False)
        self.up_proj = torch.nn.Linear(c.hidden, inter, bias=False)
        self.down_proj = torch.nn.Linear(inter, c.hidden, bias=False)

    def forward(self, x, cos, sin, past=None):
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
        self.lm_head = torch.nn.Linear(c.hidden, c.vocab, bias=False)
        self.embed_tokens.weight = self.lm_head.weight  # tied, as MiniMind2
        cos, sin = rope_tables(c.hidden // c.heads, 4096, 1e6)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids, pos=None, past=None, last_only=False):
        """Logits (B, T, V) (or (B, V) with last_only) and the per-layer (k, v) cache."""
        b, t = ids.shape
        if pos is None:
            pos = torch.arange(t, device=ids.device).expand(b, -1)
        h = self.embed_tokens(ids)
        cos, sin = self.cos[pos], self.sin[pos]  # (B, T, HD)
        presents = []
        for i, layer in enumerate(self.layers):
            h, p = layer(h, cos, sin, past[i] if past else None)
            presents.append(p)
        h = self.norm(h)
        return self.lm_head(h[:, -1] if last_only else h), presents

    def loss(self, ids, labels):
        """MiniMind's shifted cross-entropy (ignore -100)."""
        logits, _ = self(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)


OPENMP_BLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"


def loaded_blas():
    """Path of the BLAS library this process mapped (what torch really calls), or "?"."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libopenblas" in line or "libblas" in line or "libmkl" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return "?"


def sweep_configs(n):
    """(label, env overrides, torch threads) to try. PyTorch at its best on Debian: the OpenMP build
    of OpenBLAS (`LD_LIBRARY_PATH` to libopenblas0-openmp), which shares torch's OpenMP pool, at
    1 and N threads. Without that package, the pthread build at every (OpenBLAS, torch) thread pair,
    whose two pools can fight."""
    if os.path.exists(os.path.join(OPENMP_BLAS_DIR, "libopenblas.so.0")):
        ld = ":".join(p for p in [OPENMP_BLAS_DIR, os.environ.get("LD_LIBRARY_PATH", "")] if p)
        return [(f"openblas-openmp, {t} threads", {"LD_LIBRARY_PATH": ld, "OMP_NUM_THREADS": str(t)}, t)
                for t in sorted({1, n})]
    return [(f"openblas-pthread {b} threads, torch {t} threads",
             {"OPENBLAS_NUM_THREADS": str(b), "OMP_NUM_THREADS": str(t)}, t)
            for b in sorted({1, n}) for t in sorted({1, n})]


def sweep(script, argv, key, group=None):
    """Re-runs `script` under each of `sweep_configs` and prints, per `group` value of its JSON
    lines, the line with the largest `key`, with the configuration used (`config`, the BLAS library
    loaded) and every configuration's `key` (`tried`)."""
    n = os.cpu_count() or 1
    best, tried = {}, {}
    for label, env, threads in sweep_configs(n):
        out = subprocess.run([sys.executable, script, *argv, "--threads", str(threads)],
                             env=dict(os.environ, **env), capture_output=True, text=True, check=True).stdout
        for line in out.strip().splitlines():
            r = dict(json.loads(line), config=label)
            g = r.get(group) if group else None
            tried.setdefault(g, {})[label] = r[key]
            if g not in best or r[key] > best[g][key]:
                best[g] = r
    for g, r in best.items():
        print(json.dumps(dict(r, best_of="sweep", tried=tried[g])), flush=True)
