"""Writing files: atomically, so that a killed run never leaves half of one, into a usable output directory."""
import os
from pathlib import Path

from .errors import SPMLError


def write_text_atomic(path, text):
    """Write to `<path>.partial`, then rename over `path` (a rename is atomic)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def make_output_dir(path):
    """Create `path` (train.output_dir) or stop with one line: before any data is read or step run."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a regular file there or above, a read-only parent
        raise SPMLError(f"train.output_dir {path}: cannot create the directory ({error.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SPMLError(f"train.output_dir {path}: the directory is not writable")
