"""Benchmark: the same data, model and budget for several methods over seeds; prints tables.

    python -m ignore.compare_methods [--methods ...] [--seeds 0 1 2] [--out DIR] [key=value ...]

Each (method, seed) trains as a separate `python train.py` run in DIR/<method>/seed<S>; the
overrides apply to all of them. A run whose metrics.json exists is reused, not redone.
When IGNORE runs beside its controls (never_reject, oracle_reject), it also prints what its
rejection adds: IGNORE minus never_reject per seed, and the share of the never_reject ->
oracle_reject gap that IGNORE closes. A script with printed figures, not a test.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

DETECTION = ("fn_precision", "fn_recall", "rejected_fraction", "rejected_precision", "gap_auroc", "gap_lat_auroc",
             "absolute_gap_auroc", "drop_auroc", "logit_auroc")


def run_all(methods, seeds, out, overrides):
    """{method: {seed: metrics}}; trains what is missing."""
    results = {}
    for seed in seeds:
        for method in methods:
            run_dir = Path(out) / method / f"seed{seed}"
            if not (run_dir / "metrics.json").is_file():
                command = [sys.executable, "train.py", *overrides, f"method.name={method}", f"train.seed={seed}",
                           f"train.output_dir={run_dir}"]
                print("$", " ".join(command), flush=True)
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            results.setdefault(method, {})[seed] = json.loads((run_dir / "metrics.json").read_text())
    return results


def cell(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(results, seeds):
    print(f"\n| method | test mAP mean | std | per seed ({', '.join(map(str, seeds))}) | "
          + " | ".join(DETECTION) + " | train s |")
    print("|---" * (5 + len(DETECTION)) + "|")
    for method, by_seed in results.items():
        maps = np.array([by_seed[seed]["test"]["mAP"] for seed in seeds])
        detection = [np.mean([by_seed[seed]["last_epoch_train"].get(key, np.nan) for seed in seeds]) for key in DETECTION]
        seconds = np.mean([by_seed[seed]["train_seconds"] for seed in seeds])
        print(f"| {method} | {maps.mean():.2f} | {maps.std(ddof=1) if len(maps) > 1 else 0:.2f} | "
              f"{' / '.join(f'{value:.2f}' for value in maps)} | "
              + " | ".join(cell(None if np.isnan(value) else value) for value in detection) + f" | {seconds:.0f} |")


def print_rejection_summary(results, seeds):
    """What IGNORE's rejection adds over the same losses with nothing rejected."""
    if not {"ignore", "never_reject"} <= results.keys():
        return
    test_map = {method: np.array([results[method][seed]["test"]["mAP"] for seed in seeds]) for method in results}
    gain = test_map["ignore"] - test_map["never_reject"]
    print(f"\nignore - never_reject: mean {gain.mean():+.2f}, per seed {' / '.join(f'{g:+.2f}' for g in gain)}, "
          f"min {gain.min():+.2f}")
    if "oracle_reject" in results:
        headroom = test_map["oracle_reject"] - test_map["never_reject"]
        print(f"oracle_reject - never_reject: mean {headroom.mean():+.2f}; IGNORE closes "
              f"{100 * gain.mean() / headroom.mean():.0f}% of it (means)")
    aurocs = [results["ignore"][seed]["last_epoch_train"].get("gap_auroc") for seed in seeds]
    if None not in aurocs:
        print(f"ignore gap AUROC (last epoch): mean {np.mean(aurocs):.3f}, per seed "
              f"{' / '.join(f'{value:.3f}' for value in aurocs)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["full", "an", "ignore"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = run_all(args.methods, args.seeds, args.out, args.overrides)
    print_tables(results, args.seeds)
    print_rejection_summary(results, args.seeds)


if __name__ == "__main__":
    main()
