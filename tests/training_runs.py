"""The tiny training run of the tests, in a real process, and how to compare two runs' final states."""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ignore.config import merged_overrides
from launching import TWO_CPU_PROCESSES

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def tiny_run_overrides(dataset, output_dir, *extra):
    """The tiny run's settings; a key in `extra` replaces the tiny run's own (the command line takes a key once)."""
    return merged_overrides([f"data.path={dataset}", "data.image_size=32", "data.num_workers=0", "train.batch_size=8",
                             "train.epochs=2", "method.warm_up=1", "method.strong_view=true", "train.log_every=1",
                             f"train.output_dir={output_dir}"], extra)


def run_train(*args, launcher=(PYTHON, "train.py"), **extra_environment):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **extra_environment}
    return subprocess.run([*launcher, *args], cwd=REPO, capture_output=True, text=True, env=environment, timeout=600)


def logged_lines(run_dir):
    """train.log's lines without their time (the lines of a table after its first have none)."""
    lines = (run_dir / "train.log").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in lines if not line.startswith(" "))
    return [line if line.startswith(" ") else line[20:] for line in lines]


def final_state(run_dir):
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    weights = load_file(str(checkpoint / "model.safetensors"))
    method_state = torch.load(checkpoint / "custom_checkpoint_1.pkl", weights_only=True)
    return checkpoint.name, weights, method_state


def assert_same_state(state_a, state_b):
    """Two final_state results: the same step, bitwise the same weights and method buffers."""
    (name_a, weights_a, method_a), (name_b, weights_b, method_b) = state_a, state_b
    assert name_a == name_b
    assert weights_a.keys() == weights_b.keys() and method_a.keys() == method_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    for key in method_a:
        assert torch.equal(method_a[key], method_b[key]), key


TWO_PROCESSES = (*TWO_CPU_PROCESSES, "-m", "ignore.train")  # the module form; one process runs train.py
