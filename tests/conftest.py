"""Shared fixtures: a tiny dataset in our format, made here (nothing is downloaded); no failure with a traceback."""
import subprocess

import numpy as np
import pytest
from PIL import Image

from ignore.data.format import apply_protocol, write_dataset

NUM_CLASSES = 4


def draw(rng, labels, size=32):
    """A noisy image with one bright square per present class, at a class-specific place."""
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    half = size // 2
    for class_index in np.nonzero(labels)[0]:
        top, left = divmod(int(class_index), 2)
        pixels[top * half + 2: top * half + half - 2, left * half + 2: left * half + half - 2] = 230
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """40 official-train and 16 test images of 32x32, 4 classes, single-positive protocol."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    phases = {}
    for phase, count in (("train", 40), ("test", 16)):
        labels = (rng.random((count, NUM_CLASSES)) < 0.4).astype(np.uint8)
        labels[np.arange(count), rng.integers(0, NUM_CLASSES, count)] = 1  # at least one positive
        names = []
        for row, label_vector in enumerate(labels):
            name = f"{phase}/{row:03d}.png"
            (root / "images" / phase).mkdir(parents=True, exist_ok=True)
            draw(rng, label_vector).save(root / "images" / name)
            names.append(name)
        phases[phase] = (names, labels)
    splits, protocol = apply_protocol(*phases["train"], *phases["test"])
    write_dataset(root, splits, [f"class{index}" for index in range(NUM_CLASSES)],
                  image_root="images", source="tiny-test", protocol=protocol)
    return root


# how `accelerate launch` reports a failed process: torchrun's report of several, its own of one
LAUNCHER_FAILURES = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError",
                     "subprocess.CalledProcessError")
TRACEBACK = "Traceback (most recent call last):"


def tracebacks_of_ours(output):
    """The exception lines of the tracebacks in `output`, but the launcher's own: `accelerate launch`
    reports a failed process with a traceback that is not ours to change."""
    found = []
    for block in output.split(TRACEBACK)[1:]:
        raised = next((line for line in block.splitlines() if line and not line.startswith((" ", "\t"))), "")
        if not raised.startswith(LAUNCHER_FAILURES):
            found.append(raised)
    return found


@pytest.fixture(autouse=True)
def every_failure_is_one_line_without_a_traceback(monkeypatch):
    """Every command a test runs that fails (a non-zero exit) must say why without a traceback."""
    real_run, failures = subprocess.run, []

    def run(*args, **kwargs):
        result = real_run(*args, **kwargs)
        if result.returncode and isinstance(result.stderr, str):
            failures.extend((result.args, raised) for raised in tracebacks_of_ours((result.stdout or "") + result.stderr))
        return result

    monkeypatch.setattr(subprocess, "run", run)
    yield
    assert not failures, f"a failure ended in a traceback: {failures}"
