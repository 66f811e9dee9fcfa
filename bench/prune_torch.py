"""Magnitude pruning of one f32 tensor with PyTorch, as its users write it: the k-th smallest
magnitude by `kthvalue`, then `masked_fill_` of every weight at or below it. Prints the best
time of `--reps` runs as JSON.

The reference side of `examples/bench_prune.rs`, which runs this script in the same run.

    python bench/prune_torch.py --numel 16777216 --sparsity 0.8 --reps 5
"""

import argparse
import json
import time

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--numel", type=int, required=True)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(3)
    source = torch.randn(args.numel, dtype=torch.float32)
    k = round(args.sparsity * args.numel)
    best = float("inf")
    for _ in range(args.reps):
        w = source.clone()
        start = time.perf_counter()
        threshold = w.abs().kthvalue(k).values
        w.masked_fill_(w.abs() <= threshold, 0.0)
        best = min(best, time.perf_counter() - start)
        del w

    print(json.dumps({"seconds": best, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
