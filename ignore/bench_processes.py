"""Benchmark: do 2 processes learn what 1 process learns at the same global batch?

    python -m ignore.bench_processes [--seeds 0 1 2 3 4] [--batch 32] [--out DIR] [key=value ...]

Per seed, four runs of `train.py` with the same global batch and the same overrides:
one process of `--batch` images; two CPU processes over gloo of half as many each, with
per-process BatchNorm and with `model.sync_batchnorm=true`; and, the control for float
rounding alone, the one process again on 2 threads instead of 1. The data per step is
the same in all four (the shuffle is a function of (seed, epoch), each image's views of
(seed, epoch, row), and Accelerate hands each process alternate halves of the
one-process batches). Prints each run's test mAP, the mean and spread over seeds, and
each other variant's paired difference from one process with its standard error.
Runs whose metrics.json exists are reused. A script with printed figures, not a test.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = {  # name: (processes, CPU threads a process, extra overrides)
    "1 process": (1, 1, []),
    "2 processes, per-process BatchNorm": (2, 1, ["model.sync_batchnorm=false"]),
    "2 processes, model.sync_batchnorm": (2, 1, ["model.sync_batchnorm=true"]),
    # other kernels' summation order: what float rounding alone does to a run
    "1 process, 2 threads": (1, 2, []),
}


def command(processes, batch, seed, run_dir, overrides):
    launcher = ([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
                if processes == 2 else [sys.executable])
    return launcher + ["train.py", *overrides, f"train.batch_size={batch // processes}", f"train.seed={seed}",
                       f"train.output_dir={run_dir}"]


def run(processes, threads, batch, seed, run_dir, overrides):
    """The run's metrics.json, training it first unless it is there."""
    if not (run_dir / "metrics.json").is_file():
        line = command(processes, batch, seed, run_dir, overrides)
        print("$", " ".join(line), flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train.log", "w") as log:  # the launcher's and both ranks' output
            subprocess.run(line, check=True, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads((run_dir / "metrics.json").read_text())


def summary(values):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {spread:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--batch", type=int, default=32, help="the global batch (even)")
    parser.add_argument("--out", default="runs/processes")
    parser.add_argument("overrides", nargs="*", help="train.py settings for every run (default: none, the demo)")
    args = parser.parse_args(argv)
    overrides = args.overrides
    maps, seconds = {}, {}
    for seed in args.seeds:
        for index, (name, (processes, threads, extra)) in enumerate(VARIANTS.items()):
            metrics = run(processes, threads, args.batch, seed, Path(args.out) / f"variant{index}" / f"seed{seed}",
                          overrides + extra)
            maps.setdefault(name, []).append(metrics["test"]["mAP"])
            seconds.setdefault(name, []).append(metrics["train_seconds"])
    print(f"\nglobal batch {args.batch}, {' '.join(overrides) or 'demo defaults'}; test mAP per seed {args.seeds}")
    print("| variant | " + " | ".join(f"seed {seed}" for seed in args.seeds) + " | mean +- std | train s (mean) |")
    print("|---" * (len(args.seeds) + 3) + "|")
    for name, values in maps.items():
        print(f"| {name} | " + " | ".join(f"{value:.2f}" for value in values)
              + f" | {summary(values)} | {statistics.mean(seconds[name]):.0f} |")
    one = maps["1 process"]
    for name in list(VARIANTS)[1:]:
        differences = [two - single for two, single in zip(maps[name], one)]
        error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
        print(f"{name} minus 1 process: {summary(differences)} (standard error of the mean {error:.2f}; "
              f"per seed {' / '.join(f'{value:+.2f}' for value in differences)})")


if __name__ == "__main__":
    main()
