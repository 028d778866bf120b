"""A run folder holds one run: a fresh run never trains into another run's checkpoints, export or metrics.

Left there, they would mix with the new run's: checkpoint pruning keeps the highest step names (the old
run's), `train.resume=auto` would continue the old run, and the report would chart both runs' scalars.
"""
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

from ..errors import SPMLError
from ..models.export import aside_of, partial_of
from .checkpoint import CHECKPOINTS, EXPORT
from .report import FIGURES, REPORT
from .tracking import SCALARS

METRICS, TEST_SCORES, TENSORBOARD = "metrics.json", "test_scores.npy", "tensorboard"
LOCK = ".lock"  # held by the run training into the folder; the operating system frees it when that process ends


def another_run(output_dir):
    """What of a finished or interrupted run is in output_dir: checkpoints/, export/, metrics.json."""
    output_dir = Path(output_dir)
    checkpoints = output_dir / CHECKPOINTS
    found = [f"{CHECKPOINTS}/"] if checkpoints.is_dir() and any(checkpoints.iterdir()) else []
    found += [f"{EXPORT}/"] if (output_dir / EXPORT).exists() or aside_of(output_dir / EXPORT).exists() else []
    return found + ([METRICS] if (output_dir / METRICS).exists() else [])


def require_own_folder(train_config):
    """Stop with one line, before anything is written, if a fresh run's folder holds another run
    and train.overwrite is off."""
    if train_config.resume:
        if train_config.overwrite:
            raise SPMLError(f"train.overwrite=true starts a fresh run, train.resume={train_config.resume} continues "
                            "one: give one of them")
        return
    found = another_run(train_config.output_dir)
    if found and not train_config.overwrite:
        raise SPMLError(f"train.output_dir {train_config.output_dir} holds another run ({', '.join(found)}): continue "
                        "it with train.resume=auto, replace it with train.overwrite=true, or choose another "
                        "train.output_dir")


def clear_previous_run(output_dir):
    """Delete what the run before wrote (train.overwrite=true, main process): config.yaml is rewritten anyway."""
    output_dir = Path(output_dir)
    export = output_dir / EXPORT
    for path in [export, partial_of(export), aside_of(export)] + [output_dir / name for name in (
            CHECKPOINTS, METRICS, TEST_SCORES, SCALARS, REPORT, FIGURES, TENSORBOARD)]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def claimed(output_dir, main_process):
    """Hold output_dir/.lock for the block (the main process; the others wait on it anyway): a second
    run into the same folder at the same time stops with one line naming the process that holds it.

    An flock, not a file whose existence is the lock: a killed run leaves no stale lock behind.
    """
    if not main_process:
        yield
        return
    import fcntl  # POSIX; imported here so that the rest of the package still imports elsewhere

    path = Path(output_dir) / LOCK
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SPMLError(f"train.output_dir {output_dir}: another run ({holder}) is training into it now; "
                            "wait for it to end, or choose another train.output_dir") from None
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
