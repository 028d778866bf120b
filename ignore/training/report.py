"""The run report: report.md and PNG charts (report/) in the run folder, from the run's own logs.

Written by the training run at the end of a run (main process) from scalars.jsonl (every scalar the run
logged, ignore/tracking.py) and metrics.json, plus the method's pictures of the best weights:
validation mAP, the loss parts, IGNORE's two thresholds and the rejected fraction over the
steps, the test AP of each class, the CAM and mask of a few validation images.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from ..files import write_text_atomic  # noqa: E402
from .tracking import read_scalars  # noqa: E402

FIGURES = "report"
REPORT = "report.md"
DPI = 100
BAR_COLOUR = "#1f77b4"
# The per-class bar chart's axes, as fractions of the figure: fixed, so that a bar's height in
# pixels is its AP (the test reads the values back from the PNG).
BAR_AXES = (0.08, 0.3, 0.9, 0.6)
THRESHOLDS = ("train/gap_threshold", "train/avg_threshold_mean")
REJECTED = "train/rejected_fraction"


def write_report(run_dir, class_names, pictures):
    """report.md and report/*.png from run_dir's scalars.jsonl and metrics.json; pictures: {tag: (3, H, W)}."""
    run_dir = Path(run_dir)
    (run_dir / FIGURES).mkdir(exist_ok=True)
    scalars = read_scalars(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    lines = [f"# Run report: {run_dir.name}", "",
             f"Method `{metrics['method']}`, {metrics['num_processes']} process(es), best validation epoch "
             f"{metrics['best_epoch']} (val mAP {metrics['best_val_mAP']:.2f}), whose weights were tested.", "",
             "| test mAP | CF1 | OF1 |", "|---|---|---|", f"| {test['mAP']:.2f} | {test['CF1']:.2f} | {test['OF1']:.2f} |",
             "", f"CF1 and OF1 are at 0.5; at the export's per-class decision thresholds, chosen on the validation split "
             f"and used by `ignore-predict`: CF1 {test['CF1_val_thresholds']:.2f}, OF1 {test['OF1_val_thresholds']:.2f}."]

    lines += ["", "## Validation mAP", "", "| epoch | val mAP |", "|---|---|"]
    lines += [f"| {epoch['epoch']} | {epoch['val_mAP']:.2f} |" for epoch in metrics["epochs"]]
    lines += chart(run_dir, "val_map", "validation mAP (%)", {"val mAP": scalars.get("val/mAP", [])})

    losses = {name.removeprefix("train/"): series for name, series in scalars.items()
              if name == "train/loss" or name.startswith("train/loss_")}
    lines += ["", "## Loss parts", "", "Means over each logging interval; the last interval:", "",
              "| part | value |", "|---|---|"]
    lines += [f"| {name} | {series[-1][1]:.4f} |" for name, series in losses.items()]
    lines += chart(run_dir, "losses", "training loss", losses)

    if any(name in scalars for name in THRESHOLDS + (REJECTED,)):
        lines += ["", "## IGNORE's thresholds and the rejected labels", "", "The last logged values:", "",
                  "| scalar | value |", "|---|---|"]
        lines += [f"| {name.removeprefix('train/')} | {scalars[name][-1][1]:.4f} |"
                  for name in THRESHOLDS + (REJECTED,) if name in scalars]
        lines += chart(run_dir, "thresholds", "threshold",
                       {name.removeprefix("train/"): scalars[name] for name in THRESHOLDS if name in scalars},
                       lower=("rejected fraction", {"rejected fraction": scalars.get(REJECTED, [])}))

    lines += ["", "## Test AP per class", "", "| class | AP |", "|---|---|"]
    lines += [f"| {name} | {ap:.2f} |" for name, ap in zip(class_names, test["per_class_AP"])]
    per_class_bars(run_dir / FIGURES / "per_class_ap.png", class_names, test["per_class_AP"])
    lines += ["", f"![test AP per class]({FIGURES}/per_class_ap.png)"]

    for tag, image in pictures.items():
        name = tag.replace("/", "_")
        plt.imsave(run_dir / FIGURES / f"{name}.png", image.permute(1, 2, 0).clamp(0, 1).numpy())
        lines += ["", f"## {tag}", "", "The method's picture of the first validation images with the best weights "
                  "(IGNORE: each row the image, the CAM of its observed positive over it, the masked image).", "",
                  f"![{tag}]({FIGURES}/{name}.png)"]
    write_text_atomic(run_dir / REPORT, "\n".join(lines) + "\n")


def chart(run_dir, name, ylabel, series, lower=None):
    """A line chart of {label: [(step, value)]} against the step (and a second panel `lower`); its markdown."""
    series = {label: points for label, points in series.items() if points}
    if not series:
        return ["", "(nothing logged)"]
    panels = 2 if lower and any(lower[1].values()) else 1
    figure, axes = plt.subplots(panels, 1, figsize=(8, 3 * panels), sharex=True, squeeze=False)
    for axis, (label_y, lines) in zip(axes[:, 0], [(ylabel, series)] + ([lower] if panels == 2 else [])):
        for label, points in lines.items():
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        axis.set_ylabel(label_y)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[-1, 0].set_xlabel("optimiser step")
    figure.tight_layout()
    figure.savefig(run_dir / FIGURES / f"{name}.png", dpi=DPI)
    plt.close(figure)
    return ["", f"![{ylabel}]({FIGURES}/{name}.png)"]


def per_class_bars(path, class_names, per_class_ap):
    """Test AP (0-100) of each class as bars, on axes at a fixed place (BAR_AXES) of the figure."""
    figure = plt.figure(figsize=bar_figure_size(len(class_names)))
    axis = figure.add_axes(BAR_AXES)
    axis.bar(range(len(class_names)), per_class_ap, color=BAR_COLOUR, width=0.6)
    axis.set_ylim(0, 100)
    axis.set_xlim(-0.5, len(class_names) - 0.5)
    axis.set_xticks(range(len(class_names)), [name[:14] for name in class_names], rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("test AP (%)")
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def bar_figure_size(num_classes):
    """Inches: wider for many classes (COCO's 80), 4 high."""
    return max(8.0, 0.15 * num_classes), 4.0
