#!/usr/bin/env python3
"""LAPACK's symmetric eigensolvers on the same matrix as `crates/sculpt-osft/examples/eigensolver.rs`
(the Gram matrix of a random 576 x 1536 matrix), one thread, in ms: scipy's OpenBLAS `dsyevd`
(divide and conquer) and `dsyevr` (MRRR), and `torch.linalg.eigh` (MKL) when torch is present.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benches/eigh_lapack.py [--reps 10]
"""

import argparse
import json
import time

import numpy as np


def ms(f, reps):
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    x = np.random.default_rng(1).standard_normal((576, 1536)) * 0.02
    g = x @ x.T
    out = {"n": 576, "reps": args.reps}
    import scipy.linalg

    for driver in ["evd", "evr"]:
        out[f"scipy_dsy{driver}_ms"] = round(ms(lambda: scipy.linalg.eigh(g, driver=driver), args.reps), 1)
    try:
        import torch

        torch.set_num_threads(1)
        t = torch.from_numpy(g)
        out["torch_eigh_ms"] = round(ms(lambda: torch.linalg.eigh(t), args.reps), 1)
    except ImportError:
        pass
    print(json.dumps(out))


if __name__ == "__main__":
    main()
