"""Compare methods on the same data, seeds, model and budget: a table and a chart.

    python -m ignore.compare --methods an ll_r ignore --seeds 0 1 2 --out DIR [--processes N] [--config FILE | NAME]
                             [key=value ...]

Each (method, seed) is one training run (`python -m ignore.train`) in DIR/<method>/seed<S>, with the overrides applied
to every run (so every method gets the same data, model and budget), on top of --config (a YAML
file or a shipped recipe's name, as for ignore-train) when given. A method may carry its
own overrides, `NAME:key=value,key=value` (e.g. `ignore:model.backbone=resnet18`); it is
then a row of its own. A run is finished when its metrics.json exists and its config.yaml
matches the settings asked for: finished runs are reused, an interrupted one resumes from
its newest checkpoint, one made with other settings stops the command (choose another --out).
--processes N > 1 launches each run with `accelerate launch` on N processes.

Writes DIR/comparison.md (test mAP mean +- std over seeds, CF1, OF1, train time, and the
precision and recall of the false negatives a method rejects or corrects) and
DIR/comparison.png (mean test mAP with the std as error bars), and prints the table. With
IGNORE and its controls present it adds what IGNORE's rejection is worth: IGNORE minus
never_reject per seed, the share of the never_reject -> oracle_reject gap it closes, and
the information gap's AUROC.
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from .config import flatten, load_config, merged_overrides
from .errors import SPMLError, exit_on_error, require_at_least
from .files import write_text_atomic
from .train import setting_choices

CONSOLE = "console.log"  # what a run printed, in its folder
IGNORED_KEYS = {"train.resume"}  # set by this command; not a difference between two runs


def parse_method(entry):
    """'NAME[:key=value,...]' -> (row label, overrides of this method)."""
    name, _, extra = entry.partition(":")
    overrides = [f"method.name={name}"] + [item for item in extra.split(",") if item]
    return entry, overrides


def run_dir(out, label, seed):
    folder = label.replace(":", "__").replace("/", "_").replace(",", "_")
    return Path(out) / folder / f"seed{seed}"


def differences(saved, wanted):
    """Keys whose values differ between two configs (dicts of sections), as 'key: a -> b'. A key the saved
    run does not record is a setting added since it was trained, as a resume reads it: not a difference."""
    saved, wanted = dict(flatten(saved)), dict(flatten(wanted))
    keys = sorted(saved.keys() - IGNORED_KEYS)
    return [f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}" for key in keys if saved.get(key) != wanted.get(key)]


def launcher(processes):
    """The command that trains one run; it runs in this command's working directory, so relative
    paths (--out, data.path) mean the same to both."""
    if processes == 1:
        return [sys.executable, "-m", "ignore.train"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--dynamo_backend", "no", "-m", "ignore.train"]


def ensure_run(directory, overrides, processes, threads=None, config=None):
    """The run's metrics (a dict), training it first unless a finished run with these settings is there.

    threads: OMP_NUM_THREADS of each training process (None: inherited); config: --config of each run."""
    overrides = merged_overrides(overrides, [f"train.output_dir={directory}"])
    # also checks every override before any training
    wanted = dataclasses.asdict(load_config(config, overrides, setting_choices()))
    saved_config = directory / "config.yaml"
    if saved_config.is_file():
        changed = differences(yaml.safe_load(saved_config.read_text()), wanted)
        if changed:
            raise SPMLError(f"{directory} holds a run with other settings ({'; '.join(changed[:3])}); "
                            "use another --out or delete it")
    metrics = directory / "metrics.json"
    if not metrics.is_file():
        command = [*launcher(processes), *(["--config", config] if config else []),
                   *merged_overrides(overrides, ["train.resume=auto"])]
        print("$", " ".join(command), flush=True)
        directory.mkdir(parents=True, exist_ok=True)
        # the whole output, tracebacks too; not train.log, which the run writes itself
        with open(directory / CONSOLE, "w") as log:
            environment = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        if result.returncode != 0 or not metrics.is_file():
            lines = (directory / CONSOLE).read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise SPMLError(f"{directory}: training failed (exit {result.returncode}): {lines[-1]}")
    else:
        print(f"reusing {directory}", flush=True)
    return json.loads(metrics.read_text())


def fn_precision_recall(train):
    """(precision, recall) of the false negatives a method rejects or corrects in its last epoch,
    from the summed counts; None where it does neither (or rejected nothing)."""
    counts = train or {}
    chosen, true_fn = ("rejected", "rejected_true_fn") if "rejected" in counts else ("flagged", "flagged_true_fn")
    if not counts.get(chosen) or not counts.get("false_negatives"):
        return None, None
    return counts[true_fn] / counts[chosen], counts[true_fn] / counts["false_negatives"]


def last_epoch(run):
    """The last finished epoch's train summary (kept in the checkpointed history, so also there
    for a run resumed after its last epoch)."""
    return run["epochs"][-1]["train"] if run.get("epochs") else run["last_epoch_train"]


def summarise(results, seeds):
    """One row a method: {label, map (per seed), mean, std, CF1, OF1, seconds, fn_precision, fn_recall}."""
    rows = []
    for label, by_seed in results.items():
        runs = [by_seed[seed] for seed in seeds]
        maps = np.array([run["test"]["mAP"] for run in runs])
        found = [fn_precision_recall(last_epoch(run)) for run in runs]
        precision = [p for p, _ in found if p is not None]
        recall = [r for _, r in found if r is not None]
        rows.append({
            "label": label, "map": maps.tolist(), "mean": float(maps.mean()),
            "std": float(maps.std(ddof=1)) if len(maps) > 1 else 0.0,
            "CF1": float(np.mean([run["test"]["CF1"] for run in runs])),
            "OF1": float(np.mean([run["test"]["OF1"] for run in runs])),
            "seconds": float(np.mean([run["train_seconds"] for run in runs])),
            "fn_precision": float(np.mean(precision)) if precision else None,
            "fn_recall": float(np.mean(recall)) if recall else None,
        })
    return rows


def cell(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(rows, seeds):
    lines = [f"| method | test mAP (mean ± std, {len(seeds)} seeds) | per seed ({', '.join(map(str, seeds))}) | "
             "CF1 | OF1 | train s | FN precision | FN recall |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['mean']:.2f} ± {row['std']:.2f} | "
                     f"{' / '.join(f'{value:.2f}' for value in row['map'])} | {row['CF1']:.2f} | {row['OF1']:.2f} | "
                     f"{row['seconds']:.0f} | {cell(row['fn_precision'], 3)} | {cell(row['fn_recall'], 3)} |")
    return "\n".join(lines)


def rejection_summary(results, seeds):
    """What IGNORE's rejection adds over the same losses with nothing rejected (lines of text)."""
    if not {"ignore", "never_reject"} <= results.keys():
        return []
    test_map = {label: np.array([results[label][seed]["test"]["mAP"] for seed in seeds]) for label in results}
    gain = test_map["ignore"] - test_map["never_reject"]
    lines = [f"ignore - never_reject: mean {gain.mean():+.2f}, per seed {' / '.join(f'{g:+.2f}' for g in gain)}, "
             f"min {gain.min():+.2f}"]
    if "oracle_reject" in results:
        headroom = test_map["oracle_reject"] - test_map["never_reject"]
        share = f"{100 * gain.mean() / headroom.mean():.0f}%" if headroom.mean() > 0 else "n/a (no headroom)"
        lines.append(f"oracle_reject - never_reject: mean {headroom.mean():+.2f}; IGNORE closes {share} of it (means)")
    aurocs = [last_epoch(results["ignore"][seed]).get("gap_auroc") for seed in seeds]
    if None not in aurocs:
        lines.append(f"ignore gap AUROC (last epoch): mean {np.mean(aurocs):.3f}, per seed "
                     f"{' / '.join(f'{value:.3f}' for value in aurocs)}")
    return lines


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(max(4.0, 0.8 * len(rows) + 1.5), 3.6))
    positions = np.arange(len(rows))
    axes.bar(positions, [row["mean"] for row in rows], yerr=[row["std"] for row in rows], capsize=4,
             color="#4c72b0")
    axes.set_xticks(positions, [row["label"] for row in rows], rotation=45, ha="right")
    axes.set_ylabel("test mAP (%)")
    # bars start at 0: a cut axis would make their lengths lie about the ratios
    axes.set_ylim(0.0, min(100.0, max(row["mean"] + row["std"] for row in rows) + 2))
    axes.set_title("mean over seeds, error bars: std")
    figure.tight_layout()
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=120)
    pyplot.close(figure)
    partial.replace(path)


def compare(methods, seeds, out, overrides, processes=1, config=None):
    """Train what is missing, write comparison.md and comparison.png; returns the markdown."""
    out = Path(out)
    if len(set(methods)) != len(methods):
        raise SPMLError(f"--methods names a method twice: {methods}")
    results = {}
    for seed in seeds:
        for entry in methods:
            label, method_overrides = parse_method(entry)
            runs = results.setdefault(label, {})
            runs[seed] = ensure_run(run_dir(out, label, seed),
                                    merged_overrides(overrides, method_overrides, [f"train.seed={seed}"]), processes,
                                    config=config)
    rows = summarise(results, seeds)
    text = "\n".join([
        "# Comparison", "",
        f"Settings for every run: {' '.join(([f'--config {config}'] if config else []) + overrides) or '(defaults)'}; "
        f"{processes} process(es) a run.",
        "Test mAP in percent; std over seeds (n - 1). FN precision/recall: of the entries a method rejects or "
        "corrects in its last epoch, the share that are false negatives, and the share of the false negatives "
        "it finds (from the clean training labels, which no loss reads).", "",
        markdown_table(rows, seeds), "", *rejection_summary(results, seeds)]).rstrip() + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.md", text)
    plot(rows, out / "comparison.png")
    return text


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["full", "an", "ignore"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--processes", type=int, default=1, help="processes a run (accelerate launch when > 1)")
    parser.add_argument("--config", help="a YAML file of settings, or a shipped recipe's name, for every run")
    parser.add_argument("overrides", nargs="*", help="settings for every run, e.g. train.epochs=4")
    args = parser.parse_intermixed_args(argv)
    require_at_least(args, {"--processes": 1})
    print(compare(args.methods, args.seeds, args.out, args.overrides, args.processes, args.config))


if __name__ == "__main__":
    main()
