"""Reading one image, with a clear error naming the file."""
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import SPMLError


def open_rgb(image_root: Path, entry):
    """Decode one dataset entry to an RGB PIL image.

    entry is a path relative to image_root, or a datasets.Image value: embedded bytes, or (as
    older save_to_disk wrote it) only the file's path.
    Any unreadable file (missing, not an image, truncated, more pixels than PIL's
    decompression-bomb limit) raises SPMLError naming it.
    """
    if isinstance(entry, dict) and entry.get("bytes") is None:
        entry = entry["path"]
    if isinstance(entry, dict):
        source, where = io.BytesIO(entry["bytes"]), entry.get("path") or "<embedded image>"
    else:
        source = where = image_root / entry
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it: such an image is refused too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                return to_rgb(image)  # forces the full decode, so truncation shows here
    except FileNotFoundError:
        raise SPMLError(f"{where}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SPMLError(f"{where}: cannot decode image ({error})") from None


def to_rgb(image):
    """The image as RGB with 8 bits a channel.

    PIL's convert("RGB") clips 16- and 32-bit greyscale values at 255, which turns nearly
    every pixel white; those modes are scaled down instead:
      I;16, and I with every value in 0..65535 (how PIL opens 16-bit PNGs and TIFFs): v / 257,
        the exact inverse of the usual 8-to-16-bit widening v * 257;
      F (32-bit float TIFF) with every value in [0, 1], the usual range of float images: v * 255;
      anything else (I beyond 16 bits, F outside [0, 1]: depth, radiance...) has no range of
        its own, so the image's own minimum and maximum become 0 and 255, as viewers show it.
    """
    if not image.mode.startswith(("I", "F")):
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    low, high = pixels.min(), pixels.max()
    if image.mode.startswith("I") and low >= 0 and high <= 65535:
        scaled = pixels / 257
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = pixels * 255
    elif high > low:
        scaled = (pixels - low) * (255 / (high - low))
    else:
        scaled = np.zeros_like(pixels)
    return Image.fromarray(np.rint(scaled).astype(np.uint8)).convert("RGB")
