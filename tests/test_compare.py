"""`python -m ignore.compare` end to end on the tiny dataset: 2 methods, 1 seed, a few steps."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from ignore.compare import differences, fn_precision_recall, parse_method
from test_train import REPO


def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "ignore.compare", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def table_rows(text):
    """{method: cells} of the markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| method") and len(cells) == 8:
            rows[cells[0]] = cells[1:]
    return rows


def test_compare_writes_the_table_and_chart_from_the_runs_and_reuses_them(tiny_dataset, tmp_path):
    out = tmp_path / "compare"
    settings = [f"data.path={tiny_dataset}", "data.image_size=32", "data.num_workers=0", "train.batch_size=8",
                "train.epochs=2", "method.warm_up=1", "method.ll_delta_rel=10"]
    result = run_compare("--methods", "an", "ll_r", "--seeds", "0", "--out", str(out), *settings)
    assert result.returncode == 0, result.stderr[-3000:]

    text = (out / "comparison.md").read_text()
    assert text.strip() in result.stdout  # the printed table is the written one
    rows = table_rows(text)
    assert sorted(rows) == ["an", "ll_r"]
    for method in ("an", "ll_r"):
        metrics = json.loads((out / method / "seed0" / "metrics.json").read_text())
        mean_std, per_seed, cf1, of1, seconds, fn_precision, fn_recall = rows[method]
        assert mean_std == f"{metrics['test']['mAP']:.2f} ± 0.00"
        assert per_seed == f"{metrics['test']['mAP']:.2f}"
        assert (cf1, of1) == (f"{metrics['test']['CF1']:.2f}", f"{metrics['test']['OF1']:.2f}")
        assert seconds == f"{metrics['train_seconds']:.0f}"
        train = metrics["epochs"][-1]["train"]
        if method == "an":  # rejects and corrects nothing
            assert (fn_precision, fn_recall) == ("-", "-")
        else:  # 10% of the entries rejected in the second epoch
            assert train["flagged"] > 0
            assert fn_precision == f"{train['flagged_true_fn'] / train['flagged']:.3f}"
            assert fn_recall == f"{train['flagged_true_fn'] / train['false_negatives']:.3f}"
    with Image.open(out / "comparison.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 200 and picture.size[1] > 200

    before = {method: (out / method / "seed0" / "metrics.json").stat().st_mtime_ns for method in ("an", "ll_r")}
    again = run_compare("--methods", "an", "ll_r", "--seeds", "0", "--out", str(out), *settings)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ " not in again.stdout and again.stdout.count("reusing") == 2  # nothing retrained
    assert {method: (out / method / "seed0" / "metrics.json").stat().st_mtime_ns for method in before} == before
    assert (out / "comparison.md").read_text() == text

    changed = run_compare("--methods", "an", "--seeds", "0", "--out", str(out), *settings, "train.epochs=3")
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1] == (
        f"error: {out / 'an' / 'seed0'} holds a run with other settings (train.epochs: 2 -> 3); "
        "use another --out or delete it")


def test_an_unknown_override_stops_before_any_training(tmp_path):
    result = run_compare("--methods", "an", "--out", str(tmp_path / "compare"), "train.epochz=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'train.epochz'")
    assert not (tmp_path / "compare" / "an" / "seed0" / "train.log").exists()


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


@pytest.mark.parametrize("entry, label, overrides", [
    ("an", "an", ["method.name=an"]),
    ("ignore:model.backbone=resnet18,method.warm_up=1", "ignore:model.backbone=resnet18,method.warm_up=1",
     ["method.name=ignore", "model.backbone=resnet18", "method.warm_up=1"]),
])
def test_a_method_entry_may_carry_its_own_overrides(entry, label, overrides):
    assert parse_method(entry) == (label, overrides)
