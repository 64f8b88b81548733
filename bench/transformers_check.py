"""Loads the exports written by bench/transformers_check.ts with transformers itself and compares:

  - AutoModelForCausalLM (no trust_remote_code) on the llama / qwen3 / qwen3_moe folders: logits
    for the prompt must equal ours to float32 rounding (max |diff| <= 1e-4);
  - AutoTokenizer on each folder: ids for a few zh/en/emoji texts must equal ours;
  - torch.load(weights_only=True) must read our MiniMind .pth, with a tied lm_head key.

With a second argument OUT it also writes a small state dict with this torch version
(fp16 + bf16 + a tied pair + a strided view) and its values, to test our .pth reader on a
torch 2.x file. Prints one JSON line per check; exits 1 if any check fails.

  python3 bench/transformers_check.py DIR [OUT]
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    d = sys.argv[1]
    expected = json.load(open(os.path.join(d, "expected.json")))
    ok = True
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))
    for name, want in expected.items():
        path = os.path.join(d, name)
        row = {"export": name}
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            row["class"] = type(model).__name__
            with torch.no_grad():
                logits = model(torch.tensor([want["ids"]])).logits[0].float().reshape(-1)
            ours = torch.tensor(want["logits"], dtype=torch.float32)
            diff = float((logits - ours).abs().max())
            row["max_abs_diff"] = diff
            row["logits_ok"] = diff <= 1e-4
            tok = AutoTokenizer.from_pretrained(path)
            mism = [t for t, ids in want["tokens"].items() if tok.encode(t, add_special_tokens=False) != ids]
            row["tokenizer_ok"] = not mism
            if mism:
                row["tokenizer_mismatch"] = mism
            ok &= row["logits_ok"] and row["tokenizer_ok"]
        except Exception as e:  # report and go on to the next export
            row["error"] = f"{type(e).__name__}: {e}"
            ok = False
        print(json.dumps(row, ensure_ascii=False), flush=True)
    pth = os.path.join(d, "full_sft_128.pth")
    sd = torch.load(pth, map_location="cpu", weights_only=True)
    row = {"pth": pth, "keys": len(sd), "dtype": str(next(iter(sd.values())).dtype),
           "has_lm_head": "lm_head.weight" in sd}
    ok &= row["has_lm_head"]
    print(json.dumps(row), flush=True)
    if len(sys.argv) > 2:
        out = sys.argv[2]
        os.makedirs(out, exist_ok=True)
        g = torch.Generator().manual_seed(0)
        w = torch.randn(8, 6, generator=g)
        sd = {"emb": w.half(), "bf": torch.randn(5, generator=g).bfloat16(), "f32": w, "view": w.t(),
              "ids": torch.arange(7)}
        sd["tied"] = sd["emb"]
        torch.save(sd, os.path.join(out, f"torch{torch.__version__.split('+')[0]}.pth"))
        vals = {k: [float(x) for x in v.float().contiguous().reshape(-1)] for k, v in sd.items()}
        json.dump(vals, open(os.path.join(out, "torch2_values.json"), "w"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
