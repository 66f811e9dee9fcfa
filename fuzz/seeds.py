"""Write the seed corpus of the `readers` fuzz target: one small valid file of each format
the readers take, prefixed with the byte that routes it to its reader, plus the weights
fixtures of the test suite. Standard library only.

    python3 fuzz/seeds.py fuzz/corpus/readers
"""

import gzip
import json
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The first byte of an input picks the reader (see fuzz_targets/readers.rs).
SAFETENSORS, GGUF, IDX_IMAGES, IDX_LABELS, CSV, DATA_TENSORS, INSPECT_ST, INSPECT_GGUF = range(8)


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf():
    """GGUF version 3 with one string of metadata and a 2x32 q8_0 tensor."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    out += gguf_string("general.name") + struct.pack("<I", 8) + gguf_string("seed")
    # name, dims, shape (innermost first), type 8 = q8_0, offset
    out += gguf_string("w") + struct.pack("<I", 2) + struct.pack("<QQ", 32, 2)
    out += struct.pack("<IQ", 8, 0)
    out += b"\0" * (-len(out) % 32)
    for row in range(2):
        out += struct.pack("<e", 0.01 * (row + 1)) + bytes((i * 7 + row) % 256 for i in range(32))
    return out


def idx_images(n):
    return struct.pack(">IIII", 0x803, n, 2, 2) + bytes(range(4 * n))


def idx_labels(n):
    return struct.pack(">II", 0x801, n) + bytes(i % 3 for i in range(n))


def main(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    xs = struct.pack("<6f", 0.5, 1.0, -2.0, 3.5, 0.0, 1.25)
    ys = struct.pack("<3q", 0, 1, 1)
    data = safetensors({"x": ("F32", [3, 2], xs), "y": ("I64", [3], ys)})
    weights = safetensors({"0.weight": ("F32", [2, 3], xs), "0.bias": ("F32", [2], xs[:8])},
                          {"recipe": "seed"})
    digits = gzip.decompress((ROOT / "src/data/digits.csv.gz").read_bytes()).splitlines()
    csv = b"\n".join(digits[:20]) + b"\n"
    seeds = {
        "weights.safetensors": (SAFETENSORS, weights),
        "weights.gguf": (GGUF, gguf()),
        "images.idx": (IDX_IMAGES, idx_images(4)),
        "images.idx.gz": (IDX_IMAGES, gzip.compress(idx_images(4), mtime=0)),
        "labels.idx": (IDX_LABELS, idx_labels(4)),
        "labels.idx.gz": (IDX_LABELS, gzip.compress(idx_labels(4), mtime=0)),
        "digits.csv": (CSV, csv),
        "data.safetensors": (DATA_TENSORS, data),
        "inspect.safetensors": (INSPECT_ST, weights),
        "inspect.gguf": (INSPECT_GGUF, gguf()),
    }
    for path in sorted(ROOT.glob("tests/**/*.safetensors")):
        seeds[f"{path.parent.name}-{path.name}"] = (INSPECT_ST, path.read_bytes())
    for name, (which, body) in seeds.items():
        (out / name).write_bytes(bytes([which]) + body)


if __name__ == "__main__":
    main(sys.argv[1])
