"""The comparison command's parts; its end-to-end run (installed, from another folder) is in test_packaging.py."""
import os
import subprocess
import sys

import pytest

from ignore.compare import differences, ensure_run, fn_precision_recall, parse_method
from ignore.config import load_config, save_config
from ignore.errors import SPMLError
from ignore.train import setting_choices


def run_compare(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ignore.compare", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_an_unknown_override_stops_before_any_training(tmp_path):
    result = run_compare("--methods", "an", "--out", "compare", "train.epochz=3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'train.epochz'")
    assert list(tmp_path.iterdir()) == []


def test_fn_precision_and_recall_are_of_the_rejected_entries_when_a_method_rejects():
    # IGNORE flags suspects and rejects them after the warm-up: the table reports what it rejects
    ignore_counts = {"flagged": 10, "flagged_true_fn": 8, "rejected": 4, "rejected_true_fn": 3, "false_negatives": 12}
    assert fn_precision_recall(ignore_counts) == (3 / 4, 3 / 12)
    assert fn_precision_recall({"flagged": 5, "flagged_true_fn": 1, "false_negatives": 10}) == (1 / 5, 1 / 10)
    assert fn_precision_recall({"rejected": 0, "rejected_true_fn": 0, "false_negatives": 10}) == (None, None)
    assert fn_precision_recall({}) == (None, None)


def test_differences_name_the_changed_keys_and_ignore_resume():
    saved = {"train": {"epochs": 2, "resume": "auto"}, "method": {"name": "an"}}
    wanted = {"train": {"epochs": 3, "resume": ""}, "method": {"name": "an"}}
    assert differences(saved, wanted) == ["train.epochs: 2 -> 3"]
    assert differences(saved, {**wanted, "train": {"epochs": 2, "resume": ""}}) == []
    # a setting added since the saved run was trained (absent from its config) is no difference
    assert differences(saved, {**wanted, "train": {"epochs": 2, "overwrite": False}}) == []


@pytest.mark.parametrize("entry, label, overrides", [
    ("an", "an", ["method.name=an"]),
    ("ignore:model.backbone=resnet18,method.warm_up=1", "ignore:model.backbone=resnet18,method.warm_up=1",
     ["method.name=ignore", "model.backbone=resnet18", "method.warm_up=1"]),
])
def test_a_method_entry_may_carry_its_own_overrides(entry, label, overrides):
    assert parse_method(entry) == (label, overrides)


def test_a_recipe_is_part_of_the_settings_a_finished_run_is_matched_against(tmp_path):
    directory = tmp_path / "an" / "seed0"
    directory.mkdir(parents=True)
    finished = load_config("ignore_mobilenet_demo", ["method.name=an", f"train.output_dir={directory}"],
                           setting_choices())
    save_config(finished, directory / "config.yaml")
    (directory / "metrics.json").write_text('{"test": {"mAP": 61.5}}')
    assert ensure_run(directory, ["method.name=an"], 1, config="ignore_mobilenet_demo") == {"test": {"mAP": 61.5}}
    with pytest.raises(SPMLError, match=r"holds a run with other settings \(data.image_size: 96 -> 64; "):
        ensure_run(directory, ["method.name=an"], 1)  # without the recipe: the defaults' small_cnn at 64 px
