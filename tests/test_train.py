"""The trainer end to end, in real processes: a run, its export, resume, bad input."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ignore.config import merged_overrides
from ignore.training.checkpoint import resolve_resume
from ignore.training.tracking import read_scalars
from ignore.data.format import load_dataset
from ignore.errors import SPMLError
from ignore.inference import load_export, predict_probabilities
from ignore.train import main as train_main
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


def test_run_writes_metrics_and_an_export_that_reproduces_the_test_scores(tiny_dataset, tmp_path):
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"mAP", "per_class_AP", "CF1", "OF1"}
    assert len(metrics["test"]["per_class_AP"]) == 4
    assert metrics["best_epoch"] in (0, 1)
    assert "fn_precision" in metrics["last_epoch_train"] or metrics["last_epoch_train"]["flagged"] == 0
    assert [epoch["epoch"] for epoch in metrics["epochs"]] == [0, 1]
    for epoch in metrics["epochs"]:  # the false-negative score diagnostics of every epoch
        assert set(epoch["train"]) >= {"gap_auroc", "gap_lat_auroc", "absolute_gap_auroc", "drop_auroc", "logit_auroc",
                                       "outside_peak_auroc", "masked_area"}
        assert epoch["train"]["gap_auroc"] == epoch["train"]["drop_auroc"]  # method.gap=drop
        assert 0 <= epoch["train"]["gap_auroc"] <= 1
        histogram = epoch["histograms"]["gap"]
        assert sum(histogram["true_fn"]) == epoch["train"]["false_negatives"]
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").glob("events.out.tfevents.*"))

    model = load_export(run / "export")
    assert model.class_names == ["class0", "class1", "class2", "class3"]
    data = load_dataset(tiny_dataset)
    images = [Image.open(data.image_root / name) for name in data.splits["test"]["image"]]
    probabilities = predict_probabilities(model, images).numpy()
    np.testing.assert_allclose(probabilities, np.load(run / "test_scores.npy"), atol=1e-5)
    # the test's binary cross-entropy against the full labels, from the scores
    labels = np.array(data.splits["test"]["labels"]) == 1
    scores = np.load(run / "test_scores.npy").astype(np.float64)
    bce = -np.where(labels, np.log(scores), np.log1p(-scores)).mean()
    assert metrics["test"]["bce"] == pytest.approx(bce, rel=1e-4)

    # the console (not a terminal here: no progress bars) is whole lines, the same as train.log's after their time
    console = result.stdout.splitlines()
    assert "\r" not in result.stdout and "it/s" not in result.stdout + result.stderr
    assert console[0] == "32 train images, 4 classes, method ignore, 1 process(es), global batch 8, lr 0.0005"
    epoch_lines = [line for line in console if line.startswith("epoch ")]
    assert [line.split(", gap AUROC")[0] for line in epoch_lines] == [
        f"epoch {epoch['epoch']}: val mAP {epoch['val_mAP']:.2f}, val BCE {epoch['val_bce']:.4f}"
        for epoch in metrics["epochs"]]
    assert console[-1].startswith(f"test (best epoch {metrics['best_epoch']}): mAP {metrics['test']['mAP']:.2f}")
    assert logged_lines(run) == console


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


@pytest.fixture(scope="module")
def straight_run(tiny_dataset, tmp_path_factory):
    """The tiny run without a break, loading with 2 worker processes: what a resumed run must reproduce."""
    run_dir = tmp_path_factory.mktemp("straight")
    result = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "data.num_workers=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_resume_mid_epoch_and_worker_count_give_the_same_weights_and_thresholds(tiny_dataset, straight_run, tmp_path):
    # 32 train images / batch 8 = 4 steps an epoch, 8 in all; the broken run stops at step 3.
    # The straight run loads with 2 worker processes, the broken one in the main process:
    # the random views depend on (seed, epoch, row) only, so the weights must still agree.
    broken = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "broken", "train.max_steps=3"))
    assert broken.returncode == 0, broken.stderr[-3000:]
    assert (tmp_path / "broken" / "checkpoints" / "step-000000003").is_dir()
    resumed = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "broken", "train.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    # the resumed run's lines go after the broken run's in train.log
    assert logged_lines(tmp_path / "broken") == broken.stdout.splitlines() + resumed.stdout.splitlines()
    assert broken.stdout.splitlines()[-1] == "stopped at step 3 before the first evaluation; no test run"

    straight = final_state(straight_run)
    assert straight[0] == "step-000000008"
    assert straight[2]["thresholds.gap_threshold"] != 0  # it moved (the signed drop can average below 0)
    assert_same_state(final_state(tmp_path / "broken"), straight)


def test_non_finite_weights_are_never_checkpointed_and_the_newest_finite_checkpoint_resumes(tiny_dataset, tmp_path):
    # lr 1e30: Adam's first step leaves finite weights of ~1e30, the second forward overflows and
    # step 2 leaves NaN weights. A checkpoint is due every step, the loss is checked only at step 10.
    blown_up = ("optim.lr=1e30", "train.checkpoint_every_steps=1", "train.keep_checkpoints=1", "train.log_every=10")
    reference = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "reference", *blown_up, "train.max_steps=1"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "run"
    stopped = run_train(*tiny_run_overrides(tiny_dataset, run_dir, *blown_up))
    assert stopped.returncode == 2
    assert stopped.stderr.strip().splitlines()[-1].startswith(
        "error: non-finite weights or statistics at step 2, not checkpointed: trunk.conv1.weight, ")
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["step-000000001"]
    assert_same_state(final_state(run_dir), final_state(tmp_path / "reference"))

    resumed = run_train(*tiny_run_overrides(tiny_dataset, run_dir, *blown_up, "train.resume=auto"))
    assert f"resumed from {run_dir / 'checkpoints' / 'step-000000001'}: epoch 0, step 1" in resumed.stdout
    assert resumed.stderr.strip().splitlines()[-1] == stopped.stderr.strip().splitlines()[-1]


def test_non_finite_statistics_stop_the_run_although_the_loss_is_finite(tiny_dataset, tmp_path):
    # lr 1e9: the weights stay finite, so does the loss (BatchNorm rescales), but the running
    # variances overflow; the run used to finish with exit code 0 and inf in its export
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", "optim.lr=1e9"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: non-finite weights or statistics at step 2: "
        "trunk.bn2.running_var, trunk.bn3.running_var, trunk.bn4.running_var and 1 more")
    assert not (tmp_path / "run" / "export").exists() and not (tmp_path / "run" / "checkpoints").exists()


def damage(file, how):
    data = file.read_bytes()
    if how == "deleted":
        file.unlink()
    else:
        file.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint"}[how])


def test_resume_auto_passes_over_a_damaged_checkpoint(tiny_dataset, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    broken = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "train.max_steps=3",
                                           "train.checkpoint_every_steps=1", "train.keep_checkpoints=3"))
    assert broken.returncode == 0, broken.stderr[-3000:]
    newest = run_dir / "checkpoints" / "step-000000003"
    damage(newest / "model.safetensors", "truncated")
    resumed = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "train.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"checkpoint {newest} is damaged (model.safetensors: Error while deserializing header: "
            "incomplete metadata, file not fully covered); trying the one before") in resumed.stdout
    assert f"resumed from {run_dir / 'checkpoints' / 'step-000000002'}: epoch 0, step 2" in resumed.stdout
    assert_same_state(final_state(run_dir), final_state(straight_run))


@pytest.mark.parametrize("file, how, reason", [
    ("model.safetensors", "truncated", "model.safetensors: Error while deserializing header: incomplete metadata"),
    ("custom_checkpoint_2.pkl", "garbage", "custom_checkpoint_2.pkl: invalid load key, 'n'."),
    ("optimizer.bin", "empty", "optimizer.bin: Ran out of input"),
    ("optimizer.bin", "truncated", "optimizer.bin: PytorchStreamReader failed reading zip archive"),
    ("custom_checkpoint_1.pkl", "deleted", "custom_checkpoint_1.pkl is missing"),
])
def test_resume_from_a_damaged_checkpoint_path_is_one_error_line(tiny_dataset, straight_run, tmp_path, file, how,
                                                                 reason):
    checkpoint = tmp_path / "step-000000008"
    shutil.copytree(straight_run / "checkpoints" / checkpoint.name, checkpoint)
    damage(checkpoint / file, how)
    with pytest.raises(SPMLError) as error:
        resolve_resume(str(checkpoint), tmp_path, print, custom_objects=3)
    assert str(error.value).startswith(f"train.resume: checkpoint {checkpoint} is damaged ({reason}")
    assert "\n" not in str(error.value)
    if how in ("empty", "deleted"):  # the same through train.py
        result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", f"train.resume={checkpoint}"))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == f"error: train.resume: checkpoint {checkpoint} is damaged ({reason})"


def test_resume_from_a_checkpoint_of_another_model_is_one_error_line(tiny_dataset, straight_run, tmp_path):
    # a checkpoint written before the trunks took torchvision's layer names: positional names
    checkpoint = tmp_path / "step-000000008"
    shutil.copytree(straight_run / "checkpoints" / checkpoint.name, checkpoint)
    weights = load_file(str(checkpoint / "model.safetensors"))
    save_file({name.replace("trunk.conv1.", "trunk.0."): value for name, value in weights.items()},
              str(checkpoint / "model.safetensors"))
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", f"train.resume={checkpoint}"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: train.resume: checkpoint {checkpoint} holds the weights of another model (missing "
        "['trunk.conv1.weight'], unexpected ['trunk.0.weight']); resume with the model settings and trainer "
        "version that wrote it, or start afresh")


def test_resume_auto_with_every_checkpoint_damaged_is_one_error_line(straight_run, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(straight_run / "checkpoints", root)
    for checkpoint in root.iterdir():
        damage(checkpoint / "custom_checkpoint_2.pkl", "empty")
    said = []
    with pytest.raises(SPMLError) as error:
        resolve_resume("auto", tmp_path, said.append)
    assert str(error.value) == f"train.resume=auto: all 2 checkpoints in {root} are damaged"
    assert said == [f"checkpoint {root / name} is damaged (custom_checkpoint_2.pkl: Ran out of input); "
                    "trying the one before" for name in ("step-000000008", "step-000000004")]


TWO_PROCESSES = (*TWO_CPU_PROCESSES, "-m", "ignore.train")  # the module form; one process runs train.py


def test_two_process_launch_keeps_thresholds_identical_on_every_rank(tiny_dataset, tmp_path):
    # the calibrated rule: the EMA thresholds still run, and the fit on the gathered validation split too
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "ddp", "train.batch_size=4",
                                           "method.rule=calibrated"), launcher=TWO_PROCESSES)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["thresholds_identical_across_ranks"] is True  # every buffer of the method, bit for bit
    # both ranks' validation images (8, 3 unannotated labels each, the padding dropped) were in the fit
    assert [epoch["calibration"]["calibration_entries"] for epoch in metrics["epochs"]] == [24, 24]
    # the false-negative score diagnostics cover both ranks' entries
    assert sum(metrics["epochs"][-1]["histograms"]["gap"]["true_fn"]) == metrics["last_epoch_train"]["false_negatives"]
    # the main process alone says each line, once, and writes train.log
    assert result.stdout.count("epoch 0: val mAP") == 1 and logged_lines(tmp_path / "ddp") == result.stdout.splitlines()
    # both processes' images count: 4 each a step; a gradient norm at every step (train.log_every=1)
    scalars = read_scalars(tmp_path / "ddp")
    assert [step for step, _ in scalars["train/grad_norm"]] == list(range(1, 9))
    for (_, per_second), (_, per_step) in zip(scalars["speed/images_per_second"], scalars["speed/seconds_per_step"]):
        assert per_second * per_step == pytest.approx(8)


def test_pretrained_mobilenet_run_exports_a_model_that_reproduces_its_scores(tiny_dataset, tmp_path):
    torch_home = tmp_path / "torch_home"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    weights = REPO.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is not here (it ships beside the checkout, in shared/weights)")
    (torch_home / "hub" / "checkpoints" / weights.name).symlink_to(weights)
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", "model.backbone=mobilenet_v2",
                                           "model.pretrained=imagenet", "model.output_stride=16",
                                           "method.cam_normalisation=authors", "method.mask_fill=black", "train.epochs=1"),
                       TORCH_HOME=str(torch_home))
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_export(tmp_path / "run" / "export")
    assert model.export_info["model"]["output_stride"] == 16 and model.export_info["mean"] == [0.485, 0.456, 0.406]
    data = load_dataset(tiny_dataset)
    images = [Image.open(data.image_root / name) for name in data.splits["test"]["image"]]
    probabilities = predict_probabilities(model, images).numpy()
    np.testing.assert_allclose(probabilities, np.load(tmp_path / "run" / "test_scores.npy"), atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["method.warm_upp=2"], "unknown config key 'method.warm_upp'"),
    (["method.name=magic"], "config key 'method.name' must be one of an | full | ignore"),
    (["model.backbone=resnet18", "model.pretrained=/nonexistent/weights.pth"],
     "model.pretrained: /nonexistent/weights.pth is neither a file nor a torchvision weights name"),
    (["method.cam_normalisation=batch"], "config key 'method.cam_normalisation' must be one of image | authors"),
    (["model.backbone=vgg"], "config key 'model.backbone' must be one of small_cnn | resnet18"),
    (["data.path=/nonexistent/dataset"], "/nonexistent/dataset: dataset directory not found"),
])
def test_bad_input_is_one_line_and_exit_code_2(overrides, message, tmp_path):
    result = run_train(*overrides, f"train.output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_config_file_between_the_overrides(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"train:\n  output_dir: {tmp_path / 'from_yaml'}\n")
    result = run_train("method.warm_up=2", "--config", str(config_file), "data.path=/nonexistent/dataset")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: /nonexistent/dataset: dataset directory not found"
    assert (tmp_path / "from_yaml").is_dir()  # the file was read, and the override after it


@pytest.mark.parametrize("where, reason", [
    ("a_file", "cannot create the directory (File exists)"),
    ("a_file/run", "cannot create the directory (Not a directory)"),
    ("read_only/run", "cannot create the directory (Permission denied)"),
    ("read_only", "the directory is not writable"),
])
def test_unusable_output_dir_stops_before_training(tiny_dataset, tmp_path, capsys, where, reason):
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "read_only").mkdir(mode=0o555)
    if where.startswith("read_only") and os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    # in this process: the check comes before the Accelerator, so nothing outlives the call
    with pytest.raises(SystemExit) as exit_info:
        train_main(tiny_run_overrides(tiny_dataset, tmp_path / where))
    assert exit_info.value.code == 2
    output = capsys.readouterr()
    assert output.err.strip().splitlines()[-1] == f"error: train.output_dir {tmp_path / where}: {reason}"
    assert "train images" not in output.out  # stopped before the data was read


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


def test_gradient_accumulation_from_accelerate_and_checkpoint_pruning(tiny_dataset, tmp_path):
    # 4 batches an epoch accumulated by 2 = 2 optimiser steps an epoch, 4 in all; a checkpoint
    # every step, the newest 2 kept, none left half-written
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", "train.checkpoint_every_steps=1",
                                           "train.keep_checkpoints=2"), ACCELERATE_GRADIENT_ACCUMULATION_STEPS="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 16, lr 0.001" in result.stdout
    remaining = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert remaining == ["step-000000003", "step-000000004"]


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
