"""A 16-trial random search over the learning rate of the digits MLP with Optuna and
PyTorch, the reference side of `examples/bench_search.rs`, which writes the data and runs
this script in the same run.

Each trial trains a 64-128-10 MLP (SGD with momentum 0.9, cosine schedule, batch 32) for
`--epochs` epochs on `x_train`/`y_train` and returns the accuracy on `x_val`/`y_val`; Optuna's
`RandomSampler` draws the learning rate from loguniform(1e-3, 1), and `--jobs` trials run
side by side on threads, as `recipe run --jobs` does. Prints the seconds the search took
(imports and data loading excluded) and the best accuracy as JSON.

    python bench/search_optuna.py --data digits.safetensors --trials 16 --jobs 2
"""

import argparse
import json
import math
import time

import optuna
import torch
from safetensors.torch import load_file


def train_trial(data, lr, epochs, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xs, ys = data["x_train"], data["y_train"]
    n, d = xs.shape
    classes = int(ys.max()) + 1
    model = torch.nn.Sequential(
        torch.nn.Linear(d, 128), torch.nn.ReLU(), torch.nn.Linear(128, classes)
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                return 0.0
        sched.step()
    with torch.no_grad():
        pred = model(data["x_val"]).argmax(dim=1)
    return (pred == data["y_val"]).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_file(args.data)

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        return train_trial(data, lr, args.epochs, 32, trial.number)

    start = time.perf_counter()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=42)
    )
    study.optimize(objective, n_trials=args.trials, n_jobs=args.jobs)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "best": study.best_value, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
