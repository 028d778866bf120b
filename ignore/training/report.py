"""The run report: report.md and PNG charts (report/) in the run folder, from the run's own logs.

Written by the training run at the end of a run (main process) from scalars.jsonl (every scalar the run
logged, ignore/tracking.py), metrics.json and config.yaml, plus the method's pictures of the best weights:
validation mAP with the false-negative scores' AUROCs, the loss parts, IGNORE's two thresholds and the rejected
fraction over the steps (the end of the warm-up marked), the test AP of each class, the CAM and mask of a few
validation images, the training time and the config. A series that is zero throughout is named, not drawn.
"""
import json
from pathlib import Path

import yaml

from ..files import write_text_atomic
from .tracking import read_scalars

FIGURES = "report"
REPORT = "report.md"
DPI = 100
BAR_COLOUR = "#1f77b4"
# The per-class bar chart: horizontal bars, best class on top, on axes at a fixed place of the figure (fractions
# of its width; BAR_MARGINS inches above and below), so that a bar's length in pixels is its AP (the test reads
# the values back from the PNG). The left quarter holds the class names.
BAR_LEFT, BAR_WIDTH = 0.25, 0.7
BAR_MARGINS = (0.3, 0.6)  # inches: a gap above the axes, the AP axis and its label below
BAR_INCHES = 0.25  # a class's row
PICTURE_INCHES = 1.5  # a panel of a method's picture
PICTURE_MARGINS = (1.6, 0.45)  # inches: the rows' observed labels on the left, two lines of column titles above
THRESHOLDS = ("train/gap_threshold", "train/avg_threshold_mean")
REJECTED = "train/rejected_fraction"


def write_report(run_dir, class_names, pictures):
    """report.md and report/*.png from run_dir's scalars.jsonl, metrics.json and config.yaml; pictures: the
    method's {tag: Picture}."""
    run_dir = Path(run_dir)
    (run_dir / FIGURES).mkdir(exist_ok=True)
    scalars = read_scalars(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run_config = yaml.safe_load((run_dir / "config.yaml").read_text())
    test = metrics["test"]
    lines = [f"# Run report: {run_dir.name}", "",
             f"Method `{metrics['method']}`, {metrics['num_processes']} process(es), best validation epoch "
             f"{metrics['best_epoch']} (val mAP {metrics['best_val_mAP']:.2f}), whose weights were tested.", "",
             "| test mAP | CF1 | OF1 |", "|---|---|---|", f"| {test['mAP']:.2f} | {test['CF1']:.2f} | {test['OF1']:.2f} |",
             "", f"CF1 and OF1 are at 0.5; at the export's per-class decision thresholds, chosen on the validation split "
             f"and used by `ignore-predict`: CF1 {test['CF1_val_thresholds']:.2f}, OF1 {test['OF1_val_thresholds']:.2f}."]

    lines += validation_section(metrics["epochs"])
    lines += chart(run_dir, "val_map", "validation mAP (%)", {"val mAP": scalars.get("val/mAP", [])})

    losses = {name.removeprefix("train/"): series for name, series in scalars.items()
              if name == "train/loss" or name.startswith("train/loss_")}
    lines += ["", "## Loss parts", "", "Means over each logging interval; the last interval:", "",
              "| part | value |", "|---|---|"]
    lines += [f"| {name} | {series[-1][1]:.4f} |" for name, series in losses.items()]
    lines += chart(run_dir, "losses", "training loss", losses)

    if any(name in scalars for name in THRESHOLDS + (REJECTED,)):
        lines += thresholds_section(run_dir, scalars, run_config["method"]["warm_up"])

    lines += ["", "## Test AP per class", "", "| class | AP |", "|---|---|"]
    lines += [f"| {name} | {ap:.2f} |" for name, ap in zip(class_names, test["per_class_AP"])]
    per_class_bars(run_dir / FIGURES / "per_class_ap.png", class_names, test["per_class_AP"])
    lines += ["", f"![test AP per class, best first]({FIGURES}/per_class_ap.png)"]

    for tag, picture in pictures.items():
        lines += picture_section(run_dir, tag, picture, class_names)
    lines += run_section(metrics, run_config)
    write_text_atomic(run_dir / REPORT, "\n".join(lines) + "\n")


def validation_section(epochs):
    """Val mAP per epoch, with the AUROC of each false-negative score the method gave beside it."""
    aurocs = sorted({name for epoch in epochs for name in epoch.get("train", {}) if name.endswith("_auroc")},
                    key=lambda name: (name != "drop_auroc", name))  # the drop first: the one to watch
    lines = ["", "## Validation mAP", ""]
    if aurocs:
        lines += ["With the AUROC of each false-negative score over the epoch's unannotated training labels (1: "
                  "every false negative ranks above every true negative, 0.5: chance). After the warm-up, a "
                  "`drop_auroc` near 0.5 means IGNORE rejects close to at random.", ""]
    lines += ["| epoch | val mAP | " + " | ".join(aurocs) + (" |" if aurocs else ""),
              "|---|---|" + "---|" * len(aurocs)]
    lines += [f"| {epoch['epoch']} | {epoch['val_mAP']:.2f} |"
              + "".join(f" {auroc_cell(epoch['train'].get(name))} |" for name in aurocs) for epoch in epochs]
    return lines


def auroc_cell(value):
    """An AUROC as a table cell; "-" where there was none (no false negative to rank, stored as null)."""
    return "-" if value is None or value != value else f"{value:.3f}"


def thresholds_section(run_dir, scalars, warm_up):
    """IGNORE's thresholds and rejected fraction: the last values, and a chart with the end of the warm-up."""
    lines = ["", "## IGNORE's thresholds and the rejected labels", "", "The last logged values:", "",
             "| scalar | value |", "|---|---|"]
    lines += [f"| {name.removeprefix('train/')} | {scalars[name][-1][1]:.4f} |"
              for name in THRESHOLDS + (REJECTED,) if name in scalars]
    warm_up_end = end_of_warm_up(warm_up, scalars.get("val/mAP", []))
    lines += warm_up_line(warm_up, warm_up_end)
    return lines + chart(run_dir, "thresholds", "threshold",
                         {name.removeprefix("train/"): scalars[name] for name in THRESHOLDS if name in scalars},
                         lower=("rejected fraction", {"rejected fraction": scalars.get(REJECTED, [])}),
                         marks={"end of warm-up": warm_up_end} if warm_up_end is not None else {})


def end_of_warm_up(warm_up, val_map):
    """The optimiser step where the warm-up ended: that of the validation after epoch warm_up - 1 (val_map: the
    [(step, value)] of val/mAP, one a finished epoch); None without a warm-up or if the run never left it."""
    return val_map[warm_up - 1][0] if 0 < warm_up <= len(val_map) else None


def warm_up_line(warm_up, step):
    if step is not None:
        return ["", f"The dashed line is the end of the warm-up (method.warm_up={warm_up} epochs, step {step}): "
                "nothing is rejected before it."]
    if warm_up == 0:
        return ["", "No warm-up (method.warm_up=0): rejection could start at the first step."]
    return ["", f"The run never left the warm-up (method.warm_up={warm_up} epochs): nothing was rejected."]


def pyplot():
    """matplotlib's pyplot, drawing into files only: imported when a report is drawn, not by every process that
    imports the trainer (it takes most of a second)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot as plt

    return plt


def chart(run_dir, name, ylabel, series, lower=None, marks=None):
    """A line chart of {label: [(step, value)]} against the step (and a second panel `lower`), with a dashed
    vertical line at each of marks {label: step}; its markdown. A series that is zero throughout is named below
    the chart rather than drawn (a flat line on 0 hides the others' scale and says nothing a table would not)."""
    plt = pyplot()
    panels = [(ylabel, series)] + ([lower] if lower else [])
    zero = [label for _, lines in panels for label, points in lines.items()
            if points and all(value == 0 for _, value in points)]
    panels = [(label_y, {label: points for label, points in lines.items() if points and label not in zero})
              for label_y, lines in panels]
    panels = [(label_y, lines) for label_y, lines in panels if lines]
    said = ["", f"Zero throughout, not drawn: {', '.join(zero)}."] if zero else []
    if not panels:
        return ["", "(nothing logged)"] + said
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), sharex=True, squeeze=False)
    for axis, (label_y, lines) in zip(axes[:, 0], panels):
        for label, points in lines.items():
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        for label, step in (marks or {}).items():
            axis.axvline(step, color="grey", linestyle="--", linewidth=1, label=label)
        axis.set_ylabel(label_y)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[-1, 0].set_xlabel("optimiser step")
    figure.tight_layout()
    figure.savefig(run_dir / FIGURES / f"{name}.png", dpi=DPI)
    plt.close(figure)
    return ["", f"![{ylabel}]({FIGURES}/{name}.png)"] + said


def per_class_bars(path, class_names, per_class_ap):
    """Test AP (0-100) of each class as a horizontal bar, the best on top, named on the left; the axes at a
    fixed place of the figure (bar_axes)."""
    plt = pyplot()
    order = sorted(range(len(class_names)), key=lambda index: -per_class_ap[index])
    figure = plt.figure(figsize=bar_figure_size(len(class_names)))
    axis = figure.add_axes(bar_axes(len(class_names)))
    rows = range(len(order))
    axis.barh(rows, [per_class_ap[index] for index in order], color=BAR_COLOUR, height=0.6)
    axis.set_xlim(0, 100)
    axis.set_ylim(len(order) - 0.5, -0.5)  # the first row on top
    axis.set_yticks(rows, [class_names[index][:30] for index in order], fontsize=8)
    axis.set_xlabel("test AP (%)")
    axis.grid(axis="x", alpha=0.3)
    axis.set_axisbelow(True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def bar_figure_size(num_classes):
    """Inches: 8 wide, a row a class plus the margins (COCO's 80 classes: 20.9 high)."""
    return 8.0, BAR_INCHES * num_classes + sum(BAR_MARGINS)


def bar_axes(num_classes):
    """(left, bottom, width, height) of the bar chart's axes, as fractions of its figure."""
    height = bar_figure_size(num_classes)[1]
    return BAR_LEFT, BAR_MARGINS[1] / height, BAR_WIDTH, BAR_INCHES * num_classes / height


def picture_section(run_dir, tag, picture, class_names):
    """The method's Picture drawn with its column titles, each row's observed label on its left; its markdown."""
    plt = pyplot()
    rows, columns = picture.panels.shape[:2]
    observed = [", ".join(class_names[index] for index in row) or "none" for row in picture.observed]
    width, height = PICTURE_INCHES * columns + PICTURE_MARGINS[0], PICTURE_INCHES * rows + PICTURE_MARGINS[1]
    figure = plt.figure(figsize=(width, height))
    axis = figure.add_axes((PICTURE_MARGINS[0] / width, 0, 1 - PICTURE_MARGINS[0] / width,
                            1 - PICTURE_MARGINS[1] / height))
    axis.imshow(picture.grid().permute(1, 2, 0).clamp(0, 1).numpy())
    column_centres, row_centres = picture.centres()
    axis.xaxis.tick_top()
    axis.set_xticks(column_centres, picture.column_titles, fontsize=9)
    axis.set_yticks(row_centres, [f"observed: {names}" for names in observed], fontsize=9)
    axis.tick_params(length=0)
    axis.set_frame_on(False)
    name = tag.replace("/", "_")
    figure.savefig(run_dir / FIGURES / f"{name}.png", dpi=DPI)
    plt.close(figure)
    return ["", f"## {tag}", "", "The method's picture of the first validation images with the best weights, each "
            f"row's observed label on its left (top to bottom: {'; '.join(observed)}).", "",
            f"![{tag}]({FIGURES}/{name}.png)"]


def run_section(metrics, run_config):
    """How long the training took, and the merged config."""
    minutes, seconds = divmod(round(metrics["train_seconds"]), 60)
    return ["", "## The run", "",
            f"Training with its validations took {minutes} min {seconds} s on {metrics['num_processes']} "
            f"process(es) (`train_seconds` in metrics.json: {metrics['train_seconds']}).", "",
            "<details><summary>The merged config (config.yaml)</summary>", "", "```yaml",
            yaml.safe_dump(run_config, sort_keys=False).rstrip(), "```", "", "</details>"]
