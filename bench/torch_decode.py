#!/usr/bin/python3
"""PyTorch side of bench/serve_bench.ts: decode tokens/s of the same MiniMind2 architecture.

The model is bench/torch_minimind.py (MiniMind2 dense with a KV cache). Random weights (the speed
does not depend on them). It measures what the server measures: after a prefill of the
same 18-token prompt, decode N tokens one step at a time with top-k 50 / top-p 0.92 sampling, for
one sequence and for a batch of 8.

Run with Debian's interpreter and `python3-torch` (apt-get install -y python3-torch):
    /usr/bin/python3 bench/torch_decode.py --hidden_size 512 --num_hidden_layers 8 --tokens 64
Prints one JSON line per measurement. `--sweep` runs it in a subprocess under each configuration of
torch_minimind.sweep_configs (the OpenMP OpenBLAS, which shares torch's thread pool, at 1 and N
threads) and reports PyTorch's best per batch size with the configuration used. torch is never a
dependency of the library.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

from torch_minimind import MiniMind, loaded_blas, sweep


def sample(logits, temperature=0.7, top_k=50, top_p=0.92):
    logits = logits.float() / temperature
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
    logits, past = model(ids, pos, None, last_only=True)
    nxt = sample(logits)
    t0 = time.perf_counter()
    for s in range(tokens - 1):
        logits, past = model(nxt, torch.full((batch, 1), prompt_len + s), past, last_only=True)
        nxt = sample(logits)
    return batch * (tokens - 1) / (time.perf_counter() - t0)


def main():
    if "--sweep" in sys.argv:
        return sweep(__file__, [a for a in sys.argv[1:] if a != "--sweep"], "decode_tokens_per_s", "batch")
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden_size", type=int, default=512)
    ap.add_argument("--num_hidden_layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv_heads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt_len", type=int, default=18)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    c = argparse.Namespace(hidden=a.hidden_size, layers=a.num_hidden_layers, heads=a.heads,
                           kv_heads=a.kv_heads, vocab=6400)
    model = MiniMind(c).eval()
    if a.dtype == "bfloat16":
        model = model.to(torch.bfloat16)  # PyTorch's bf16 inference: weights and activations bf16
    decode(model, 1, a.prompt_len, 8)  # warm-up
    for batch in (1, 8):
        best = max(decode(model, batch, a.prompt_len, a.tokens) for _ in range(a.repeat))
        print(json.dumps({
            "impl": "pytorch", "torch": torch.__version__, "threads": a.threads, "blas": loaded_blas(),
            "hidden_size": a.hidden_size, "num_hidden_layers": a.num_hidden_layers,
            "batch": batch, "tokens": a.tokens, "dtype": a.dtype, "decode_tokens_per_s": round(best, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
