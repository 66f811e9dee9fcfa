"""Read a GGUF file written by `recipe` with the `gguf` package (the reader published by
llama.cpp), dequantize every tensor with it, and compare with `recipe`'s own dequantization.

usage: gguf_check.py MODEL.gguf OURS.safetensors REPORT.json

OURS holds, under each tensor's name, the f32 values `recipe` dequantized, in the shape the
GGUF file stores (rows of the last dimension). Exits non-zero when a tensor is missing, has
another shape, or differs by more than 1e-6 anywhere; writes per-tensor figures to REPORT.
"""

import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file


def main():
    model, ours_path, report_path = sys.argv[1:4]
    reader = GGUFReader(model)
    ours = load_file(ours_path)
    report = {}
    failed = []
    for tensor in reader.tensors:
        name = tensor.name
        theirs = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # GGUF lists dimensions innermost first; numpy wants them outermost first.
        theirs = theirs.reshape([int(d) for d in reversed(tensor.shape.tolist())])
        if name not in ours:
            failed.append(f"{name}: missing from recipe's side")
            continue
        mine = ours[name]
        if mine.shape != theirs.shape:
            failed.append(f"{name}: shape {mine.shape} against {theirs.shape}")
            continue
        diff = float(np.max(np.abs(mine - theirs))) if mine.size else 0.0
        report[name] = {"type": tensor.tensor_type.name, "max_abs_diff": diff}
        if not diff <= 1e-6:
            failed.append(f"{name}: differs by {diff}")
    missing = set(ours) - {t.name for t in reader.tensors}
    failed.extend(f"{name}: missing from the GGUF file" for name in sorted(missing))
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    if failed:
        print("\n".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
