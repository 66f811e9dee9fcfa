"""Train an MLP with PyTorch on a safetensors file of `x` (float32 [n, d]) and `y` (int64
[n]) and print the milliseconds of each epoch as JSON.

The reference side of `examples/bench_train.rs`, which writes the data and runs this script
between its own runs. The loop is the one `recipe` runs: a fresh random order every epoch,
mini-batches of `--batch` (the last one smaller), cross-entropy, SGD with momentum 0.9.
`--model conv` trains the convolutional workload on the features read as 28x28 images;
`--threads` sets PyTorch's intra-op threads.

    python bench/train_torch.py --data d.safetensors --hidden 512,512 --batch 128 --epochs 4
"""

import argparse
import json
import time

import torch
from safetensors.torch import load_file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--hidden", default="128")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--model", choices=["mlp", "conv"], default="mlp")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    data = load_file(args.data)
    xs, ys = data["x"], data["y"]
    n, d = xs.shape
    classes = int(ys.max()) + 1

    layers, width = [], d
    if args.model == "conv":
        # The convolutional workload: 28x28 images, as examples/bench_train.rs builds it.
        layers = [
            torch.nn.Unflatten(1, (1, 28, 28)),
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
        ]
        width = 32 * 7 * 7
    for h in [int(h) for h in args.hidden.split(",") if h]:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, classes))
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    epoch_ms, loss_value = [], float("nan")
    for _ in range(args.epochs):
        start = time.perf_counter()
        order = torch.randperm(n)
        total = 0.0
        for i in range(0, n, args.batch):
            idx = order[i : i + args.batch]
            opt.zero_grad()
            loss = loss_fn(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
            # recipe reads every batch's loss too (to stop on NaN), so this is the same work.
            total += loss.item() * len(idx)
        epoch_ms.append((time.perf_counter() - start) * 1e3)
        loss_value = total / n

    print(
        json.dumps(
            {
                "epoch_ms": epoch_ms,
                "loss": loss_value,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
