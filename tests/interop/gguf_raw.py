"""List the tensors of a GGUF file as the `gguf` package (llama.cpp's reader) sees them:
for each, its type, its shape (outermost first) and its stored bytes in hex (for small test
files).

usage: gguf_raw.py MODEL.gguf   (prints JSON)
"""

import json
import sys

from gguf import GGUFReader


def main():
    reader = GGUFReader(sys.argv[1])
    out = {}
    for t in reader.tensors:
        out[t.name] = {
            "type": t.tensor_type.name,
            "shape": [int(d) for d in reversed(t.shape.tolist())],
            "hex": t.data.tobytes().hex(),
        }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
