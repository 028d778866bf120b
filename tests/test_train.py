"""The trainer end to end, in real processes: a run, its export, launches, settings."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from ignore.training.tracking import read_scalars
from ignore.data.format import load_dataset
from ignore.inference import load_export, predict_probabilities
from ignore.train import main as train_main
from training_runs import REPO, TWO_PROCESSES, logged_lines, run_train, tiny_run_overrides


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


def test_gradient_accumulation_from_accelerate_and_checkpoint_pruning(tiny_dataset, tmp_path):
    # 4 batches an epoch accumulated by 2 = 2 optimiser steps an epoch, 4 in all; a checkpoint
    # every step, the newest 2 kept, none left half-written
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", "train.checkpoint_every_steps=1",
                                           "train.keep_checkpoints=2"), ACCELERATE_GRADIENT_ACCUMULATION_STEPS="2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 16, lr 0.001" in result.stdout
    remaining = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert remaining == ["step-000000003", "step-000000004"]


@pytest.mark.parametrize("overrides, message", [
    (["method.warm_upp=2"], "unknown config key 'method.warm_upp'"),
    (["method.name=magic"], "config key 'method.name' must be one of an | full | ignore"),
    (["method.cam_normalisation=batch"], "config key 'method.cam_normalisation' must be one of image | authors"),
    (["model.backbone=vgg"], "config key 'model.backbone' must be one of small_cnn | resnet18"),
])
def test_a_bad_setting_is_one_line_and_exit_code_2(overrides, message, tmp_path, capsys):
    # in this process: the settings are checked before torch is imported
    with pytest.raises(SystemExit) as exit_info:
        train_main([*overrides, f"train.output_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {message}")


@pytest.mark.parametrize("overrides, message", [
    (["model.backbone=resnet18", "model.pretrained=/nonexistent/weights.pth"],
     "model.pretrained: /nonexistent/weights.pth is neither a file nor a torchvision weights name"),
    (["data.path=/nonexistent/dataset"], "/nonexistent/dataset: dataset directory not found"),
])
def test_a_missing_file_is_one_line_and_exit_code_2(overrides, message, tmp_path):
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
