"""Per-channel symmetric int8 quantization of one f32 matrix with PyTorch, as its users
write it: scales `w.abs().amax(1) / 127`, then `torch.quantize_per_channel` along the rows,
both timed. Prints the best time of `--reps` runs as JSON.

The reference side of `examples/bench_quant.rs`, which runs this script in the same run.

    python bench/quant_torch.py --side 4096 --reps 5
"""

import argparse
import json
import time
import warnings

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, required=True)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    # The quantized tensor types are deprecated; the warning would only clutter stderr.
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.manual_seed(3)
    w = torch.randn(args.side, args.side, dtype=torch.float32)
    best = float("inf")
    for _ in range(args.reps):
        start = time.perf_counter()
        scales = w.abs().amax(1) / 127
        zero_points = torch.zeros(args.side, dtype=torch.long)
        q = torch.quantize_per_channel(w, scales.double(), zero_points, 0, torch.qint8)
        best = min(best, time.perf_counter() - start)
        del q

    print(json.dumps({"seconds": best, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
