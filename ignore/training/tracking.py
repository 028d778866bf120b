"""Where a run's scalars go: the configured tracker (`train.tracker`) and, always, scalars.jsonl.

scalars.jsonl is the run's own log, whatever the tracker: one JSON line per `accelerator.log`
call, `{"step": N, "name": value, ...}`, which the run report reads back.
"""
import json
from pathlib import Path

import numpy as np
from torch.utils.tensorboard.summary import hparams

from accelerate.tracking import GeneralTracker, get_available_trackers

from ..config import flattened
from ..errors import SPMLError
from ..files import append_line
from .registry import TRACKERS

SCALARS = "scalars.jsonl"
# The metrics of TensorBoard's HParams tab: scalars the run logs (val/ at each epoch, test/ at the end), of which
# the tab shows the last value logged beside the run's settings.
HPARAM_METRICS = ("val/best_mAP", "val/mAP", "val/bce", "test/mAP", "test/CF1", "test/OF1")


def trackers(name, output_dir):
    """`log_with` for the Accelerator: the named tracker (none: no tracker) and the scalar log."""
    if name not in TRACKERS:
        raise SPMLError(f"train.tracker '{name}' is not one of {TRACKERS}")
    if name != "none" and name not in [str(kind) for kind in get_available_trackers()]:
        raise SPMLError(f"train.tracker={name}: the {name} package is not installed (pip install {name})")
    return ([] if name == "none" else [name]) + [ScalarLog(output_dir)]


class ScalarLog(GeneralTracker):
    """Appends each log call to output_dir/scalars.jsonl (main process only, as every tracker)."""

    name = "scalars"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, output_dir):
        super().__init__()
        self.path = Path(output_dir) / SCALARS

    @property
    def tracker(self):
        return self.path

    def log(self, values, step=None, **kwargs):
        record = {"step": step, **{name: float(value) for name, value in values.items()
                                   if isinstance(value, (int, float))}}
        append_line(self.path, json.dumps(record))


def start_trackers(accelerator, config, command, step):
    """Start the trackers with the merged config as their hyperparameters; TensorBoard also gets the command.

    TensorBoard gets the config as the session of its HParams tab, with HPARAM_METRICS as the session's metrics,
    written into the run's own folder (tensorboard/), where the scalars of those names are logged: the tab shows
    each metric's last value there, so the columns fill in as the run goes. Accelerate's own way
    (SummaryWriter.add_hparams without metrics) writes the session into a new folder, where there is none to show.
    """
    tensorboard = config.train.tracker == "tensorboard"
    accelerator.init_trackers("tensorboard" if tensorboard else Path(config.train.output_dir).name,
                              config=None if tensorboard else flattened(config))
    if tensorboard and accelerator.is_main_process:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        experiment, session_start, _ = hparams(flattened(config), dict.fromkeys(HPARAM_METRICS, 0.0))  # names only
        writer.file_writer.add_summary(experiment, step)
        writer.file_writer.add_summary(session_start, step)
        writer.add_text("command", f"`{command}`", step)  # a code span: Markdown would eat a path's underscores


def end_trackers(accelerator, config, step):
    """Mark TensorBoard's HParams session finished, then close every tracker (a stopped run's session stays open)."""
    if config.train.tracker == "tensorboard" and accelerator.is_main_process:
        _, _, session_end = hparams({}, {})  # status: success
        accelerator.get_tracker("tensorboard", unwrap=True).file_writer.add_summary(session_end, step)
    accelerator.end_training()


def read_scalars(run_dir):
    """{name: [(step, value), ...]} sorted by step; a step logged again (a resumed run) keeps its last value."""
    series = {}
    path = Path(run_dir) / SCALARS
    for line in path.read_text().splitlines() if path.is_file() else []:
        record = json.loads(line)
        step = record.pop("step")
        for name, value in record.items():
            series.setdefault(name, {})[step] = value
    return {name: sorted(values.items()) for name, values in series.items()}


def log_pictures(run, preview):
    """The method's pictures, each as one grid image: a row an image."""
    if not run.accelerator.is_main_process or run.config.train.tracker != "tensorboard":
        return
    pictures = run.method.pictures(run.model, preview)
    if pictures:
        grids = {tag: picture.grid()[None] for tag, picture in pictures.items()}
        run.accelerator.get_tracker("tensorboard").log_images(grids, step=run.progress.global_step)


def log_histograms(run, fn_scores):
    """Scores of the true false negatives and of the true negatives, one histogram each."""
    if not run.accelerator.is_main_process or not fn_scores or run.config.train.tracker != "tensorboard":
        return
    writer = run.accelerator.get_tracker("tensorboard", unwrap=True)
    for name, groups in fn_scores.items():
        for group, values in groups.items():
            values = values[np.isfinite(values)]  # a gated-out label scores -inf
            if len(values):
                writer.add_histogram(f"fn_scores/{name}_{group}", values, run.progress.global_step)


def fn_score_line(train_summary):
    """', gap AUROC 0.71 (with LAT 0.74, logit 0.80)' when the method scored false negatives."""
    if "gap_auroc" not in train_summary:
        return ""
    return (f", gap AUROC {train_summary['gap_auroc']:.3f} (with LAT {train_summary['gap_lat_auroc']:.3f}, "
            f"drop {train_summary['drop_auroc']:.3f}, logit {train_summary['logit_auroc']:.3f}, "
            f"outside peak {train_summary['outside_peak_auroc']:.3f})")
