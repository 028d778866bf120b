"""Writing a file so that a killed run never leaves half of it."""
import os
from pathlib import Path


def write_text_atomic(path, text):
    """Write to `<path>.partial`, then rename over `path` (a rename is atomic)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
