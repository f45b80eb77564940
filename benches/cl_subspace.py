"""Where a task's update lands in the next task's OSFT split.

For each OSFT target of a run of `cargo xtask bench cl`, takes the weights before a task (`W0`)
and after it (`W1`), and the split the next task trains with: the SVD of `W1` with that task's
resolved `k` (from the run's `results.json`). Prints, over all targets, the share of the task's
update `dW = W1 - W0` (squared Frobenius norm) in the low-low block `U_l^T dW V_l`, the part
the next task may rewrite, next to the share a random update would have there, `(r/R)^2`.

    python benches/cl_subspace.py --base <HF folder of the start model> \
        --run target/bench-cl/runs/osft --task 1

`--preserve F` splits at `k = floor(F R)` instead: what a larger frozen fraction would
protect. Needs torch and safetensors. `--base` for SmolLM2: `sculpt convert --model <the GGUF> --out
<folder> --dtype f32` (the dequantised weights the run started from).
"""
import argparse
import json
import os

import torch
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="model folder before the task (task 1: the start model)")
    ap.add_argument("--run", required=True, help="the method's run folder (osft)")
    ap.add_argument("--task", type=int, default=1, help="the task whose update is measured (1-based)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preserve", type=float, default=None,
                    help="split at k = floor(F * R) instead of the next task's resolved k (what a larger frozen fraction would keep)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    results = json.load(open(os.path.join(a.run, "results.json")))
    tasks = results["tasks"]
    if a.task >= len(tasks):
        raise SystemExit(f"task {a.task} has no next task in {a.run}")
    ck = sorted(d for d in os.listdir(os.path.join(a.run, "checkpoints")) if d.startswith(f"task-{a.task:02d}-"))
    before = load_file(os.path.join(a.base, "model.safetensors")) if a.task == 1 else None
    if a.task > 1:
        prev = sorted(d for d in os.listdir(os.path.join(a.run, "checkpoints")) if d.startswith(f"task-{a.task - 1:02d}-"))
        before = load_file(os.path.join(a.run, "checkpoints", prev[0], "model", "model.safetensors"))
    after = load_file(os.path.join(a.run, "checkpoints", ck[0], "model", "model.safetensors"))
    ranks = tasks[a.task]["ranks"]  # the next task's split, computed on `after`
    low = total = rand = wnorm = 0.0
    per_kind = {}
    for t in ranks:
        name, k = t["name"], t["k"]
        w0, w1 = before[name + ".weight"].double(), after[name + ".weight"].double()
        if a.preserve is not None:
            k = min(max(int(a.preserve * min(w1.shape)), 1), min(w1.shape) - 1)
        dw = w1 - w0
        u, s, vh = torch.linalg.svd(w1, full_matrices=False)
        ul, vl = u[:, k:], vh[k:, :].T
        e_low = (ul.T @ dw @ vl).pow(2).sum().item()
        e_all = dw.pow(2).sum().item()
        wnorm += w0.pow(2).sum().item()
        big = min(w1.shape)
        low += e_low
        total += e_all
        rand += e_all * ((big - k) / big) ** 2
        kind = name.rsplit(".", 1)[-1]
        pk = per_kind.setdefault(kind, [0.0, 0.0, 0.0])
        pk[0] += e_low
        pk[1] += e_all
        pk[2] += e_all * ((big - k) / big) ** 2
    print(json.dumps({
        "task": tasks[a.task - 1]["name"],
        "next": tasks[a.task]["name"],
        "split": "resolved k" if a.preserve is None else f"k = {a.preserve} R",
        "targets": len(ranks),
        "update_share_in_low_block": round(low / total, 4),
        "random_update_share": round(rand / total, 4),
        "relative_update_norm": round((total / wnorm) ** 0.5, 5),
        "per_kind": {k: [round(v[0] / v[1], 3), round(v[2] / v[1], 3)] for k, v in per_kind.items()},
    }))


if __name__ == "__main__":
    main()
