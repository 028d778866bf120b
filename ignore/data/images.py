"""Reading one image, with a clear error naming the file."""
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import SPMLError


def open_rgb(image_root: Path, entry):
    """Decode one dataset entry to an RGB PIL image.

    entry is a path relative to image_root, or a datasets.Image value with embedded bytes.
    Any unreadable file (missing, not an image, truncated) raises SPMLError naming it.
    """
    if isinstance(entry, dict):
        source, where = io.BytesIO(entry["bytes"]), entry.get("path") or "<embedded image>"
    else:
        source = where = image_root / entry
    try:
        with Image.open(source) as image:
            return image.convert("RGB")  # convert() forces the full decode, so truncation shows here
    except FileNotFoundError:
        raise SPMLError(f"{where}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise SPMLError(f"{where}: cannot decode image ({error})") from None
