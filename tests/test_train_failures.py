"""A run that goes wrong stops in one line: a diverged or non-finite loss or state, an unreadable image."""
import json
import shutil

import pytest

from ignore.data.format import load_dataset
from training_runs import TWO_PROCESSES, run_train, tiny_run_overrides


def test_non_finite_statistics_stop_the_run_although_the_loss_is_finite(tiny_dataset, tmp_path):
    # lr 1e9: the weights stay finite, so does the loss (BatchNorm rescales), but the running
    # variances overflow; the run used to finish with exit code 0 and inf in its export
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", "optim.lr=1e9"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: non-finite weights or statistics at step 2: "
        "trunk.bn2.running_var, trunk.bn3.running_var, trunk.bn4.running_var and 1 more")
    assert not (tmp_path / "run" / "export").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("lr, message", [
    # Adam's first step moves every weight by ~lr: finite, but the second forward overflows
    ("1e30", "error: non-finite loss at step 2..2 (interval means: "),
    # finite all along, but orders of magnitude above the start: it used to train on and exit 0
    ("1e6", "error: the loss diverged: its mean over steps 2..2 is "),
])
def test_a_non_finite_or_diverged_loss_stops_the_run_with_the_step(tiny_dataset, tmp_path, lr, message):
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", f"optim.lr={lr}"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(message), last
    assert "Traceback" not in result.stderr
    if lr == "1e30":
        assert "loss_spbc=" in last
    else:
        assert "times the first step's" in last and not (tmp_path / "run" / "export").exists()


def test_unreadable_training_image_stops_the_run_or_is_skipped_and_counted(tiny_dataset, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, dataset)
    broken = load_dataset(dataset).splits["train"]["image"][5]
    (dataset / "images" / broken).write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    # with worker processes, as by default: the worker's error is the same one line
    stopped = run_train(*tiny_run_overrides(dataset, tmp_path / "error", "data.num_workers=2"))
    assert stopped.returncode == 2
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {dataset / 'images' / broken}: cannot decode image")
    assert "Traceback" not in stopped.stderr and "worker" not in stopped.stderr

    skipped = run_train(*tiny_run_overrides(dataset, tmp_path / "skip", "data.bad_images=skip"))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2  # once in each of the two epochs
    assert "skipped unreadable images: train rows [5]" in skipped.stdout


def test_a_bad_image_in_one_ranks_shard_is_one_line_and_the_launchers_root_cause(tiny_dataset, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, dataset)
    broken = dataset / "images" / load_dataset(dataset).splits["train"]["image"][5]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_train(*tiny_run_overrides(dataset, tmp_path / "run"), launcher=TWO_PROCESSES)
    line = f"error: {broken}: cannot decode image (Truncated File Read)"
    assert result.returncode == 1  # the launcher's own code: torchrun exits 1 when a process fails
    assert result.stderr.splitlines().count(line) == 1  # the rank's own line; the summary quotes it again
    assert "[rank" not in result.stderr  # no rank's traceback: the other rank stops in one line too
    root_cause = result.stderr.split("Root Cause (first observed failure):")[1]
    assert "exitcode  : 2" in root_cause and f"traceback : {line}" in root_cause
