"""Where a run's scalars go: the configured tracker (`train.tracker`) and, always, scalars.jsonl.

scalars.jsonl is the run's own log, whatever the tracker: one JSON line per `accelerator.log`
call, `{"step": N, "name": value, ...}`, which the run report reads back.
"""
import json
from pathlib import Path

from accelerate.tracking import GeneralTracker, get_available_trackers
from accelerate.utils import LoggerType

from .errors import SPMLError

SCALARS = "scalars.jsonl"


def trackers(name, output_dir):
    """`log_with` for the Accelerator: the named tracker (none: no tracker) and the scalar log."""
    choices = ["none"] + [kind for kind in LoggerType.list() if kind != "all"]
    if name not in choices:
        raise SPMLError(f"train.tracker '{name}' is not one of {choices}")
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
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


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
