"""Benchmark: the same data, seed and budget for several methods; prints a table.

    python -m ignore.compare_methods [--methods full an ignore] [key=value ...]

Each method trains as a separate `python train.py` run in runs/compare/<method>; the
overrides apply to all of them. A script with printed figures, not a test.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["full", "an", "ignore"])
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows = []
    for method in args.methods:
        run_dir = Path(args.out) / method
        command = [sys.executable, "train.py", *args.overrides, f"method.name={method}", f"train.output_dir={run_dir}"]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows.append((method, metrics))
    print(f"\n{'method':<8} {'test mAP':>8} {'CF1':>6} {'OF1':>6} {'best ep':>7} {'FN prec':>7} {'FN rec':>6} {'rejected':>8} {'time s':>7}")
    for method, metrics in rows:
        last = metrics["last_epoch_train"]
        detection = [last.get(key) for key in ("fn_precision", "fn_recall", "rejected_fraction")]
        cells = " ".join(f"{value:>7.3f}" if value is not None else f"{'-':>7}" for value in detection)
        test = metrics["test"]
        print(f"{method:<8} {test['mAP']:>8.2f} {test['CF1']:>6.2f} {test['OF1']:>6.2f} {metrics['best_epoch']:>7d} "
              f"{cells} {metrics['train_seconds']:>7.1f}")


if __name__ == "__main__":
    main()
