"""Benchmark: do 2 processes learn what 1 process learns at the same global batch?

    python benchmarks/processes.py [--seeds 0 1 2 3 4] [--batch 32] [--out DIR] [key=value ...]

Per seed, four runs of `train.py` with the same global batch and the same overrides:
one process of `--batch` images; two CPU processes over gloo of half as many each, with
per-process BatchNorm and with `model.sync_batchnorm=true`; and, the control for float
rounding alone, the one process again on 2 threads instead of 1. The data per step is
the same in all four (the shuffle is a function of (seed, epoch), each image's views of
(seed, epoch, row), and Accelerate hands each process alternate halves of the
one-process batches). Prints each run's test mAP, the mean and spread over seeds, and
each other variant's paired difference from one process with its standard error.
Runs are trained, reused or refused as `python -m ignore.compare` does (`ensure_run`). A script with printed figures, not a test.
"""
import argparse
import statistics
from pathlib import Path

from ignore.compare import ensure_run
from ignore.errors import SPMLError, exit_on_error, require_at_least

VARIANTS = {  # name: (processes, CPU threads a process, extra overrides)
    "1 process": (1, 1, []),
    "2 processes, per-process BatchNorm": (2, 1, ["model.sync_batchnorm=false"]),
    "2 processes, model.sync_batchnorm": (2, 1, ["model.sync_batchnorm=true"]),
    # other kernels' summation order: what float rounding alone does to a run
    "1 process, 2 threads": (1, 2, []),
}


def summary(values):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {spread:.2f}"


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--batch", type=int, default=32, help="the global batch (even)")
    parser.add_argument("--out", default="runs/processes")
    parser.add_argument("overrides", nargs="*", help="train.py settings for every run (default: none, the demo)")
    args = parser.parse_args(argv)
    require_at_least(args, {"--batch": 2})
    if args.batch % 2:
        raise SPMLError(f"--batch must be even (two processes take half each), got {args.batch}")
    overrides = args.overrides
    maps, seconds = {}, {}
    for seed in args.seeds:
        for index, (name, (processes, threads, extra)) in enumerate(VARIANTS.items()):
            metrics = ensure_run(Path(args.out) / f"variant{index}" / f"seed{seed}",
                                 [*overrides, *extra, f"train.batch_size={args.batch // processes}",
                                  f"train.seed={seed}"], processes, threads)
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
