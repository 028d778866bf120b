"""Benchmark: Query2Label against the CAM model on the same data and budget; prints a table.

    python benchmarks/q2l.py [--methods an never_reject ignore] [--seeds 0 1 2] [--out DIR]
                               [--parallel 2] [--timed-steps 8] [key=value ...]

Each (model, method, seed) trains as a separate `python -m ignore.train` run in
DIR/<model>/<method>/seed<S>: the CAM model with the defaults, Query2Label with
the shipped recipe ignore_q2l_demo; the key=value overrides (the budget: epochs, data.train_subset,
...) apply to both. A run whose metrics.json exists is reused. `--parallel N` runs N at once,
one thread each. Then both models are built in this process and timed on the same training
batch with IGNORE's step (forward, masked pass, backward, optimiser step), one step of each
in turn, so that a busy machine slows both alike: the median ms/step. A script with printed
figures, not a test.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from ignore.config import load_config, merged_overrides, scaled_lr
from ignore.data.loading import build_loaders, load_spml_data
from ignore.errors import exit_on_error, require_at_least
from ignore.losses.registry import build_method
from ignore.models.build import build_model
from ignore.training.optim import build_optimizer

# model: (its shipped recipe or None, its overrides), before the budget
MODELS = {"cam": (None, ["model.name=cam"]), "q2l": ("ignore_q2l_demo", [])}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["an", "never_reject", "ignore"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench_q2l")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at once (one thread each if > 1)")
    parser.add_argument("--timed-steps", type=int, default=8, help="timed IGNORE steps per model")
    parser.add_argument("overrides", nargs="*", help="the budget, applied to both models")
    args = parser.parse_args(argv)
    require_at_least(args, {"--parallel": 1, "--timed-steps": 1})
    return args


def train_all(args):
    """{(model, method, seed): metrics}; trains what is missing, `args.parallel` at a time."""
    jobs, running = [], []
    for model, (config_file, model_overrides) in MODELS.items():
        model_arguments = (["--config", config_file] if config_file else []) + model_overrides
        for method in args.methods:
            for seed in args.seeds:
                run_dir = Path(args.out) / model / method / f"seed{seed}"
                command = [sys.executable, "-m", "ignore.train", *model_arguments, *args.overrides,
                           f"method.name={method}", f"train.seed={seed}", f"train.output_dir={run_dir}"]
                jobs.append(((model, method, seed), run_dir, command))
    environment = {**os.environ, **({"OMP_NUM_THREADS": "1"} if args.parallel > 1 else {})}
    for _, run_dir, command in jobs:
        if (run_dir / "metrics.json").is_file():
            continue
        while len(running) >= args.parallel:
            wait_for_one(running)
        print("$", " ".join(command), flush=True)
        running.append((subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True), command))
    while running:
        wait_for_one(running)
    return {key: json.loads((run_dir / "metrics.json").read_text()) for key, run_dir, _ in jobs}


def wait_for_one(running):
    process, command = running[0]
    _, errors = process.communicate()
    running.pop(0)
    if process.returncode:
        sys.exit(f"error: {' '.join(command)} exited with {process.returncode}:\n{errors[-2000:]}")


def model_config(model, overrides):
    config_file, model_overrides = MODELS[model]
    return load_config(config_file, merged_overrides(model_overrides, overrides, ["method.name=ignore"]))


def parameter_counts(model_name, overrides, num_classes):
    """(all parameters, head_parameters()) of the model as the runs build it."""
    model = build_model(model_config(model_name, overrides).model, num_classes)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.head_parameters())


def time_steps(overrides, timed_steps, warmup=2):
    """{model: median ms per IGNORE step (after its warm-up)} on one real batch, in turn."""
    accelerator = Accelerator(cpu=True)
    steppers = {}
    for name in MODELS:
        config = model_config(name, overrides)
        torch.manual_seed(0)
        data = load_spml_data(config.data, accelerator)
        num_classes = len(data.class_names)
        model = build_model(config.model, num_classes).train()
        method = build_method(config.method, num_classes, accelerator, normalisation=model.normalisation)
        config.data.num_workers = 0
        loader, _, _ = build_loaders(data, config.data, method.views, config.train.batch_size, 0, model.normalisation)
        optimizer = build_optimizer(model, config.optim, config.model.head_lr_multiplier,
                                    scaled_lr(config.optim, config.train.batch_size))
        steppers[name] = (model, method, optimizer, next(iter(loader)), config.method.warm_up)
    times = {name: [] for name in steppers}
    for round_index in range(warmup + timed_steps):
        for name, (model, method, optimizer, batch, epoch) in steppers.items():
            started = time.perf_counter()
            output = method.step(model, batch, epoch)  # after the warm-up: rejection active
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if round_index >= warmup:
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(args, results, counts, step_ms):
    print(f"\n{torch.get_num_threads()} thread(s) for the step times; test mAP mean ± std over seeds "
          f"{', '.join(map(str, args.seeds))}")
    print("| model | parameters (all / head) | ms/step (IGNORE) | " + " | ".join(args.methods) + " |")
    print("|---" * (3 + len(args.methods)) + "|")
    for model in MODELS:
        cells = []
        for method in args.methods:
            maps = np.array([results[model, method, seed]["test"]["mAP"] for seed in args.seeds])
            spread = maps.std(ddof=1) if len(maps) > 1 else 0.0
            cells.append(f"{maps.mean():.2f} ± {spread:.2f} ({' / '.join(f'{value:.2f}' for value in maps)})")
        total, head = counts[model]
        print(f"| {model} | {total / 1e6:.3f}M / {head / 1e6:.3f}M | {step_ms[model]:.0f} | " + " | ".join(cells) + " |")


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    results = train_all(args)
    num_classes = len(next(iter(results.values()))["test"]["per_class_AP"])
    counts = {model: parameter_counts(model, args.overrides, num_classes) for model in MODELS}
    step_ms = time_steps(args.overrides, args.timed_steps)
    print_table(args, results, counts, step_ms)


if __name__ == "__main__":
    main()
