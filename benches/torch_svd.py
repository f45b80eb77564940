#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench svd`: torch.linalg.svd (full_matrices=False, fp32) of
every OSFT target of SmolLM2-135M-Instruct (q,k,v,o,gate,up,down of 30 blocks: 210 matrices),
the decomposition PEFT's OSF tuner runs. Loads the GGUF with transformers' own GGUF loader.

    python benches/torch_svd.py --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --threads 2

Prints one JSON line: {"impl": "torch.linalg.svd", "targets": 210, "secs": ..., "threads": T, ...}
With --peft-wrap, a second one: {"impl": "peft-osf-wrap", "secs": ...}, the time of
`get_peft_model(model, OSFConfig(effective_rank=0.5))` on a freshly loaded model (the whole
decomposition step of PEFT's OSF tuner, half of every target preserved).
"""

import argparse
import json
import os
import re
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peft-wrap", action="store_true")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    gguf = Path(args.gguf).resolve()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
    pat = re.compile(r"\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$")
    mats = [p.detach().float().contiguous() for n, p in model.named_parameters() if pat.search(n)]
    torch.linalg.svd(mats[0], full_matrices=False)  # warm-up
    t0 = time.perf_counter()
    # Only the decompositions are timed, and all of them are kept, as sculpt's bench does; the
    # checks below run after the clock stops.
    factors = [torch.linalg.svd(w, full_matrices=False) for w in mats]
    secs = time.perf_counter() - t0
    worst = max(float(torch.linalg.norm(u * s @ vh - w) / torch.linalg.norm(w)) for w, (u, s, vh) in zip(mats, factors))

    # Largest entry of UᵀU − I and Vh Vhᵀ − I, in float64.
    def dev(q):
        q = q.double()
        return float((q.T @ q - torch.eye(q.shape[1], dtype=torch.float64)).abs().max())

    orth = max(max(dev(u), dev(vh.T)) for u, _, vh in factors)
    print(json.dumps({"impl": "torch.linalg.svd", "targets": len(mats), "secs": round(secs, 3), "threads": args.threads,
                      "max_rel_reconstruction": worst, "max_orthogonality": orth, "torch": torch.__version__}))
    if args.peft_wrap:
        from peft import OSFConfig, get_peft_model

        del factors, mats
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
        t0 = time.perf_counter()
        model = get_peft_model(model, OSFConfig(effective_rank=0.5))
        secs = time.perf_counter() - t0
        print(json.dumps({"impl": "peft-osf-wrap", "secs": round(secs, 3), "threads": args.threads}))


if __name__ == "__main__":
    main()
