"""train.mixed_precision: bf16 on a GPU by default, the launcher's choice when it makes one."""
import pytest
import torch

from ignore.errors import SPMLError
from ignore.training.precision import resolve_mixed_precision


@pytest.mark.parametrize("launcher, gpu_bf16, expected", [
    (None, False, "no"),     # CPU, plain python train.py
    ("no", False, "no"),     # CPU, accelerate launch without --mixed_precision
    ("no", True, "bf16"),    # a GPU with bf16, accelerate launch without --mixed_precision
    (None, True, "bf16"),
    ("fp16", True, "fp16"),  # the launcher named one
    ("bf16", False, "bf16"),
])
def test_auto(monkeypatch, launcher, gpu_bf16, expected):
    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: gpu_bf16)
    assert resolve_mixed_precision("auto") == expected


def test_an_explicit_value_wins_over_the_launcher(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision("no") == "no"


def test_an_unknown_value_names_the_key():
    with pytest.raises(SPMLError, match="train.mixed_precision must be one of .* got 'fp8'"):
        resolve_mixed_precision("fp8")
