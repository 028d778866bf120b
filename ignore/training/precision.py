"""Which autocast precision a run gets: bf16 on a GPU by default, fp32 on a CPU."""
import os

import torch

from ..errors import SPMLError
from .registry import MIXED_PRECISION


def resolve_mixed_precision(setting):
    """Accelerate's `mixed_precision` for the config value `setting`.

    "auto": the launcher's `--mixed_precision` when it names one (Accelerate's launcher
    passes "no" when none is given, so "no" there counts as unset), else bf16 on a CUDA
    device that supports it, else "no" (fp32). Any other value is used as is, over the
    launcher's.
    """
    if setting not in MIXED_PRECISION:
        raise SPMLError(f"train.mixed_precision must be one of {MIXED_PRECISION}, got '{setting}'")
    if setting != "auto":
        return setting
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher != "no":
        return launcher
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
