"""Writing files atomically (a killed run or a full disk never leaves half of one), and the run folder."""
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import SPMLError


def write_atomic(path, write):
    """`write(partial)` writes `<path>.partial`, which is then renamed over `path` (a rename is atomic).

    If the disk refuses (full, over quota, read-only), the partial file goes and the run stops
    with one line; whatever was at `path` before stays as it was.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with whole_or_nothing(path, partial):
        write(partial)
    os.replace(partial, path)


def write_text_atomic(path, text):
    write_atomic(path, lambda partial: partial.write_text(text))


def write_bytes_atomic(path, data):
    write_atomic(path, lambda partial: partial.write_bytes(data))


def append_line(path, line):
    """Append `line` and a newline to a log; if the disk refuses, cut the file back to its lines before
    (a half line would break every later reading of it) and stop with one line."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        with path.open("a") as file:
            file.write(line + "\n")
    except OSError as error:
        if path.exists():
            os.truncate(path, size)
        raise SPMLError(f"{path}: cannot append ({error.strerror or error}); the lines before are kept") from None


@contextmanager
def whole_or_nothing(target, partial, kept=None):
    """Run a block that writes `partial` (a file or a folder) for `target`; if it fails, delete `partial`.
    If the disk refused (full, over quota, read-only), stop with one line that says why and what is
    kept (`kept`, or the previous `target` when there is one)."""
    try:
        yield
    except Exception as error:
        reason = write_failure(error, partial)  # before the partial's space is freed
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        if reason is None:
            raise
        if kept is None:
            kept = f"the previous {target.name} is kept" if target.exists() else "nothing half-written is left"
        raise SPMLError(f"{target}: cannot write ({reason}); {kept}") from None


def write_failure(error, partial):
    """Why writing `partial` failed, when `error` is the disk's doing; None for any other error.

    Each writer reports a full disk its own way: Python as OSError(ENOSPC), safetensors as
    SafetensorError('... I/O error: No space left on device (os error 28)'), torch.save as a
    RuntimeError from its zip writer ('[enforce fail at inline_container.cc] unexpected pos').
    """
    if isinstance(error, OSError):
        return error.strerror or str(error)
    message = str(error)
    if "I/O error: " in message:  # safetensors
        return message.split("I/O error: ", 1)[1].split(" (os error")[0]
    if isinstance(error, RuntimeError) and "inline_container" in message:  # torch.save
        free = shutil.disk_usage(next(path for path in partial.parents if path.exists())).free
        return f"the file writer stopped with {free} bytes free on the disk"
    return None


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
