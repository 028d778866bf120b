"""Writing files atomically (text and strict JSON: a killed run never leaves half of one), and the run folder."""
import json
import os
from pathlib import Path

from .errors import SPMLError


def write_text_atomic(path, text):
    """Write to `<path>.partial`, then rename over `path` (a rename is atomic)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_json_atomic(path, payload):
    """Strict JSON: a nan (an AUROC without false negatives, say) is written as null."""
    write_text_atomic(path, json.dumps(without_nan(payload), indent=2, allow_nan=False) + "\n")


def without_nan(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def make_output_dir(path):
    """Create `path` (train.output_dir) or stop with one line: before any data is read or step run."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a regular file there or above, a read-only parent
        raise SPMLError(f"train.output_dir {path}: cannot create the directory ({error.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SPMLError(f"train.output_dir {path}: the directory is not writable")


def require_writable_file(path, option):
    """Stop with one line unless a file can be written (atomically) at `path`: before the work that makes it."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise SPMLError(f"{option} {path}: is a folder, not a file name")
    if not folder.is_dir():
        raise SPMLError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):  # the file is written beside it, then renamed
        raise SPMLError(f"{option} {path}: the folder {folder} is not writable")
