#!/usr/bin/python3
"""PyTorch side of bench/train_bench.ts: tokens/s of one full MiniMind2 train step, as
trainer/train_pretrain.py runs it on CPU (model in bench/torch_minimind.py): loss = shifted
cross-entropy (ignore -100); backward;
clip_grad_norm_(1.0); torch.optim.AdamW (lr 5e-4, weight decay 0.01); zero_grad. float32, random
token ids (the speed does not depend on them).

Run with Debian's interpreter and `python3-torch` (apt-get install -y python3-torch
libopenblas0-openmp); torch is never a dependency of the library:
    /usr/bin/python3 bench/torch_train.py --hidden_size 512 --num_hidden_layers 8 \
        --batch_size 4 --max_seq_len 256 --steps 5
    python3 bench/torch_train.py --device cuda --batch_size 32 --max_seq_len 512   # GPU, fp32 eager
Prints one JSON line (`cpu_ms_per_step`: CPU time of the process, all threads). `--sweep` runs it
in subprocesses under each configuration of torch_minimind.sweep_configs (the OpenMP OpenBLAS at 1
and N threads) and reports the fastest, with the configuration it used.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

from torch_minimind import MiniMind, loaded_blas, sweep


def main():
    if "--sweep" in sys.argv:
        return sweep(__file__, [a for a in sys.argv[1:] if a != "--sweep"], "tokens_per_s")
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
    ap.add_argument("--device", default="cpu", help="cpu or cuda (fp32 eager, TF32 off)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="bfloat16: torch.autocast(dtype=bfloat16) around forward and loss (MiniMind's); "
                         "float16: the same in float16 with a GradScaler (CUDA only, as MiniMind)")
    a = ap.parse_args()
    if a.dtype == "float16" and a.device != "cuda":
        sys.exit("--dtype float16 needs --device cuda (CPU autocast is bfloat16 only)")
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit(f"torch {torch.__version__}: CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as on the CPU, not TF32
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    c = argparse.Namespace(hidden=a.hidden_size, layers=a.num_hidden_layers, heads=a.num_attention_heads,
                           kv_heads=a.num_key_value_heads, vocab=a.vocab_size, intermediate=a.intermediate_size)
    model = MiniMind(c).to(a.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    ids = torch.randint(3, a.vocab_size, (a.batch_size, a.max_seq_len), device=a.device)
    half = a.dtype in ("bfloat16", "float16")
    autocast_dtype = torch.float16 if a.dtype == "float16" else torch.bfloat16
    scaler = torch.cuda.amp.GradScaler(enabled=a.dtype == "float16")  # MiniMind's trainers
    times = []
    cpu = 0.0
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        c0 = time.process_time()
        with torch.autocast(a.device, dtype=autocast_dtype, enabled=half):
            loss = model.loss(ids, ids)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
    ms = 1000 * sum(times) / len(times)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": a.threads, "device": a.device, "dtype": a.dtype,
        "device_name": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "blas": loaded_blas(), "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "cpu_ms_per_step": round(1000 * cpu / len(times), 1),
        "hidden_size": a.hidden_size, "num_hidden_layers": a.num_hidden_layers,
        "params": sum(p.numel() for p in model.parameters()),
        "batch_size": a.batch_size, "max_seq_len": a.max_seq_len, "steps": a.steps,
        "ms_per_step": round(ms, 1),
        "tokens_per_s": round(a.batch_size * a.max_seq_len / (ms / 1000), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if a.device == "cuda" else 0,
    }), flush=True)


if __name__ == "__main__":
    main()
