"""The Python side of examples/bench_checkpoint.rs: the `gguf` package's own q8_0 and q4_0
quantizers and PyTorch's per-channel int8 on the first tensors of the generated checkpoint,
in GB/s of f32 values, and how many dequantized values differ from recipe's.

    python bench/quant_checkpoint.py DIR --tensors 8
"""

import argparse
import json
import pathlib
import struct
import time

import numpy as np
import torch
from gguf import GGMLQuantizationType, quants


def tensors(directory, count):
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    names = sorted(n for n in index["weight_map"] if n.endswith(".weight"))[:count]
    out = []
    for name in names:
        path = directory / index["weight_map"][name]
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            begin, end = header[name]["data_offsets"]
            f.seek(8 + n + begin)
            raw = np.frombuffer(f.read(end - begin), dtype=np.uint16)
        values = (raw.astype(np.uint32) << 16).view(np.float32)
        out.append(values.reshape(header[name]["shape"]))
    return out


def int8_per_channel(x):
    scale = x.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    zero = torch.zeros(x.shape[0], dtype=torch.int64)
    return torch.quantize_per_channel(x, scale, zero, 0, torch.qint8)


def compare(label, ours, theirs):
    differ = int(np.count_nonzero(ours != theirs))
    worst = float(np.max(np.abs(ours - theirs)))
    print(f"  {label}: {differ} of {ours.size} dequantized values differ (largest gap {worst:.3g})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--tensors", type=int, default=8)
    args = parser.parse_args()
    xs = tensors(args.dir, args.tensors)
    gb = sum(x.size for x in xs) * 4 / 1e9
    torch.set_num_threads(torch.get_num_threads())

    results = {}
    for label, kind in [("q8_0", GGMLQuantizationType.Q8_0), ("q4_0", GGMLQuantizationType.Q4_0)]:
        start = time.perf_counter()
        qs = [quants.quantize(x, kind) for x in xs]
        seconds = time.perf_counter() - start
        print(f"gguf (Python) {label}: {gb / seconds:.2f} GB/s")
        results[label] = quants.dequantize(qs[0], kind).reshape(xs[0].shape)

    ts = [torch.from_numpy(x.copy()) for x in xs]
    start = time.perf_counter()
    qs = [int8_per_channel(t) for t in ts]
    seconds = time.perf_counter() - start
    print(f"PyTorch int8 per-channel: {gb / seconds:.2f} GB/s")
    results["int8_per-channel"] = qs[0].dequantize().numpy()

    scratch = args.dir / "compare"
    print("first tensor, recipe against Python:")
    for label, theirs in results.items():
        ours = np.fromfile(scratch / f"{label}.f32", dtype=np.float32).reshape(theirs.shape)
        compare(label, ours, theirs.astype(np.float32))


if __name__ == "__main__":
    main()
