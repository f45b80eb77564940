#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench step`: one AdamW training step of SmolLM2-135M-Instruct
(fp32, CPU), plain full fine-tuning and PEFT's OSF tuner (default targets) preserving half of
every target (`effective_rank` 0.5, PEFT's default) and 0.8 of it (the adaptive rule's mean), on
random token batches of the same shape sculpt's bench uses.

    python benches/torch_step.py --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --batch 4 --seq 128 --steps 2 --threads 2

`--methods pytorch-full,peft-osf,peft-osf-0.8` (the default: all) picks the rows. Prints one JSON
line per method: {"impl": "pytorch-full" | "peft-osf" | "peft-osf-0.8", "s_per_step": ..., ...}
"""

import argparse
import json
import os
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="pytorch-full,peft-osf,peft-osf-0.8")
    args = ap.parse_args()
    ranks = {"pytorch-full": None, "peft-osf": 0.5, "peft-osf-0.8": 0.8}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ranks]
    if unknown:
        ap.error(f"--methods: unknown {', '.join(unknown)} (expected some of {', '.join(ranks)})")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    gguf = Path(args.gguf).resolve()
    g = torch.Generator().manual_seed(0)

    def load():
        return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)

    for name in methods:
        model = load()
        if ranks[name] is not None:
            from peft import OSFConfig, get_peft_model

            t0 = time.perf_counter()
            model = get_peft_model(model, OSFConfig(effective_rank=ranks[name]))
            wrap = time.perf_counter() - t0
        else:
            wrap = 0.0
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        batches = [torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g) for _ in range(args.steps + 1)]

        def step(ids):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        step(batches[0])  # warm-up
        t0 = time.perf_counter()
        for ids in batches[1:]:
            step(ids)
        s = (time.perf_counter() - t0) / args.steps
        print(json.dumps({"impl": name, "s_per_step": round(s, 3), "tokens_per_s": round(args.batch * args.seq / s, 1),
                          "wrap_secs": round(wrap, 2), "batch": args.batch, "seq": args.seq, "threads": args.threads,
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
