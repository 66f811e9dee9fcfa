"""Run a model saved by `recipe` with plain numpy, as an independent check
that the file holds what LANGUAGE.md promises: PyTorch names and layouts.

usage: forward.py MODEL.safetensors INPUTS.f32 N FEATURES OUT.f32

Reads the inputs (N x FEATURES little-endian f32), runs the forward pass of
the `nn.Sequential` described in the file's `architecture` metadata, and
writes the outputs (N x CLASSES little-endian f32).
"""

import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def forward(arch, tensors, xs):
    for idx, layer in enumerate(arch["layers"]):
        if layer == "Relu":
            xs = np.maximum(xs, 0.0)
        elif layer == "Tanh":
            xs = np.tanh(xs)
        elif layer == "Sigmoid":
            xs = 1.0 / (1.0 + np.exp(-xs))
        elif layer == "Flatten":
            xs = xs.reshape(xs.shape[0], -1)
        elif isinstance(layer, dict) and "Linear" in layer:
            w = tensors[f"{idx}.weight"]  # PyTorch layout: [out, in]
            b = tensors[f"{idx}.bias"]
            xs = xs @ w.T + b
        elif isinstance(layer, dict) and "Dropout" in layer:
            pass  # evaluation: dropout is the identity
        else:
            raise SystemExit(f"layer {layer!r} is not covered by this check")
    return xs


def main():
    model, inputs, n, features, out = sys.argv[1:6]
    n, features = int(n), int(features)
    tensors = load_file(model)
    with safe_open(model, framework="numpy") as f:
        arch = json.loads(f.metadata()["architecture"])
    xs = np.fromfile(inputs, dtype="<f4").reshape(n, features)
    ys = forward(arch, tensors, xs).astype("<f4")
    ys.tofile(out)


if __name__ == "__main__":
    main()
