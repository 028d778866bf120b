"""OpenImages' incomplete labels: the converter's verified mask carried through the loader into validation, the
decision thresholds, the test and ignore-evaluate, each class scored on its verified images only; complete labels
as before."""
import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score
from torch import nn
from torch.utils.data import DataLoader

from data_script import load_script
from ignore.data.format import META_FILE, SplitArrays, load_dataset, write_dataset
from ignore.data.torch_dataset import SPMLImageDataset, collate_skipping
from ignore.data.views import eval_view
from ignore.errors import SPMLError
from ignore.evaluate import main as evaluate_main
from ignore.inference import load_export, predict_probabilities
from ignore.metrics import f1_thresholds, multilabel_metrics
from ignore.training.loop import evaluate
from test_prepare_openimages import DESCRIPTIONS, HEADER
from training_runs import run_train, tiny_run_overrides

prepare_openimages = load_script("prepare_openimages")

# Tortoise Cat Dog Car (DESCRIPTIONS' order); +1 verified present, -1 verified absent, 0 unverified; rows by ImageID
VERIFIED_LABELS = {
    "train": {"a1": [0, 1, 0, 0], "a2": [0, -1, 1, 0], "a3": [1, 0, 0, 0], "a4": [0, 0, -1, 1],
              "a5": [-1, 1, 0, 0], "a6": [0, 0, 1, 0], "a7": [1, 0, 0, 1], "a8": [0, -1, 0, 1]},
    "val": {"v1": [1, -1, 0, 0], "v2": [0, 1, -1, -1], "v3": [-1, 0, 1, 0],  # Car: verified absent only
            "v4": [-1, 1, 0, -1], "v5": [0, -1, 1, 0], "v6": [1, 0, -1, 0]},
    "test": {"t1": [1, 1, -1, 0], "t2": [0, -1, 0, 1], "t3": [-1, 0, 1, 0],
             "t4": [0, 1, 0, -1], "t5": [-1, 0, -1, 1], "t6": [0, -1, 1, 0]},
}
MIDS = [line.split(",")[0] for line in DESCRIPTIONS.splitlines()]
FILES = {"train": "oidv7-train", "val": "oidv7-val", "test": "oidv7-test"}
FOLDERS = {"train": "train", "val": "validation", "test": "test"}


def matrix(split):
    return np.array(list(VERIFIED_LABELS[split].values()))


def write_openimages(root):
    """The label CSVs, one row a verified label, and a noise image of its own for every image."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True)
    (root / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n" + DESCRIPTIONS)
    for split, images in VERIFIED_LABELS.items():
        rows = [f"{image},verification,{mid},{1 if value == 1 else 0}\n"
                for image, values in images.items() for mid, value in zip(MIDS, values) if value]
        (root / f"{FILES[split]}-annotations-human-imagelabels.csv").write_text(HEADER + "".join(rows))
        (root / FOLDERS[split]).mkdir()
        for image in images:
            noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(noise).save(root / FOLDERS[split] / f"{image}.jpg")


@pytest.fixture(scope="module")
def openimages_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("verified") / "openimages"
    write_openimages(root)
    return root


@pytest.fixture(scope="module")
def openimages(openimages_root):
    """The converted dataset: every verified label observed."""
    prepare_openimages.main(["--root", str(openimages_root), "--out", str(openimages_root.parent / "verified")])
    return openimages_root.parent / "verified"


@pytest.fixture(scope="module")
def single_positive(openimages_root):
    """The converted dataset: one verified positive an image observed, the rest unknown."""
    out = openimages_root.parent / "single_positive"
    prepare_openimages.main(["--root", str(openimages_root), "--out", str(out), "--single-positive"])
    return out


def test_the_converter_writes_the_verified_mask_the_loader_carries(openimages):
    dataset = load_dataset(openimages)
    for split in ("train", "val", "test"):
        assert dataset.splits[split]["verified"] == (matrix(split) != 0).astype(int).tolist()
        assert dataset.splits[split]["labels"] == (matrix(split) == 1).astype(int).tolist()
    items = SPMLImageDataset(dataset.splits["test"], dataset.image_root, {"image": eval_view(32)})
    batch = collate_skipping([items[row] for row in range(len(items))])
    assert batch["verified"].tolist() == (matrix("test") != 0).astype(float).tolist()


class MeanColour(nn.Module):
    """Fixed logits from an image's mean colour: a model whose scores differ from image to image."""

    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.arange(3 * num_classes, dtype=torch.float32).view(num_classes, 3).sin() * 9)
            self.head.bias.zero_()

    def forward(self, images):
        return {"logits": self.head(images.mean(dim=(2, 3)))}


def binary_cross_entropy(scores, labels):
    return -np.where(labels == 1, np.log(scores), np.log1p(-scores)).mean()


def evaluate_split(dataset, split, batch_size=4):
    accelerator = Accelerator(cpu=True)
    items = SPMLImageDataset(dataset.splits[split], dataset.image_root, {"image": eval_view(32)})
    loader = accelerator.prepare(DataLoader(items, batch_size=batch_size, collate_fn=collate_skipping))
    return evaluate(MeanColour(len(dataset.class_names)), loader, accelerator, split=split)


def test_evaluate_scores_each_class_on_its_verified_images_only(openimages):
    metrics, scores, labels, verified = evaluate_split(load_dataset(openimages), "test")
    assert verified.tolist() == (matrix("test") != 0).tolist()
    known = matrix("test") != 0
    aps = [average_precision_score(labels[known[:, c], c], scores[known[:, c], c]) for c in range(4)]
    assert metrics["per_class_AP"] == pytest.approx([100 * ap for ap in aps], abs=1e-12)
    assert metrics["mAP"] == pytest.approx(100 * np.mean(aps), abs=1e-12)
    assert metrics["verified_entries"] == 14 and metrics["classes_without_positive"] == 0
    assert metrics["OF1"] == pytest.approx(100 * f1_score(labels[known], scores[known] >= 0.5), abs=1e-12)
    # unverified labels taken for negatives would give other APs here
    assert multilabel_metrics(scores, labels)["per_class_AP"] != pytest.approx(metrics["per_class_AP"])
    assert metrics["bce"] == pytest.approx(binary_cross_entropy(scores[known], labels[known]), rel=1e-9)

    metrics, scores, labels, verified = evaluate_split(load_dataset(openimages), "val")
    assert metrics["classes_without_positive"] == 1 and metrics["per_class_AP"][3] == 0.0  # Car: negatives only
    assert metrics["mAP"] == pytest.approx(sum(metrics["per_class_AP"][:3]) / 4)


def test_a_complete_label_dataset_is_evaluated_as_before(tiny_dataset):
    metrics, scores, labels, verified = evaluate_split(load_dataset(tiny_dataset), "test", batch_size=5)
    assert verified is None and "verified_entries" not in metrics
    # what evaluate computed before the mask existed: every entry, bit for bit
    assert metrics == {**multilabel_metrics(scores, labels), "bce": metrics["bce"]}
    assert metrics["bce"] == pytest.approx(binary_cross_entropy(scores, labels), rel=1e-9)


@pytest.fixture(scope="module")
def trained(single_positive, tmp_path_factory):
    """A tiny run on the single-positive dataset: (its folder, what it printed)."""
    run = tmp_path_factory.mktemp("run") / "run"
    result = run_train(*tiny_run_overrides(single_positive, run, "train.batch_size=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result.stdout


def test_training_selects_thresholds_and_tests_on_the_verified_labels(single_positive, trained, tmp_path, capsys):
    run, printed = trained
    known = matrix("test") != 0
    labels = matrix("test") == 1
    test = json.loads((run / "metrics.json").read_text())["test"]
    scores = np.load(run / "test_scores.npy")
    aps = [average_precision_score(labels[known[:, c], c], scores[known[:, c], c]) for c in range(4)]
    assert test["per_class_AP"] == pytest.approx([100 * ap for ap in aps], abs=1e-9)
    assert test["verified_entries"] == 14
    assert multilabel_metrics(scores, labels)["per_class_AP"] != pytest.approx(test["per_class_AP"])
    thresholds = np.array(json.loads((run / "export" / "config.json").read_text())["decision_thresholds"])
    predicted = scores >= thresholds
    precision = np.mean([precision_score(labels[known[:, c], c], predicted[known[:, c], c], zero_division=0)
                         for c in range(4)])
    recall = np.mean([recall_score(labels[known[:, c], c], predicted[known[:, c], c]) for c in range(4)])
    assert test["CF1_val_thresholds"] == pytest.approx(100 * 2 * precision * recall / (precision + recall), abs=1e-9)
    assert test["OF1_val_thresholds"] == pytest.approx(100 * f1_score(labels[known], predicted[known]), abs=1e-9)
    assert printed.splitlines()[-1].endswith(
        "(on the 14 verified labels only; 0 classes without a verified positive count as AP 0)")

    # the export's thresholds and val mAP: those of its validation scores over the verified validation labels
    val_labels, val_known = matrix("val") == 1, matrix("val") != 0
    data = load_dataset(single_positive)
    assert data.splits["val"]["verified"] == val_known.astype(int).tolist()  # the draw leaves the mask whole
    export = load_export(run / "export")
    val_scores = predict_probabilities(export, [Image.open(data.image_root / name)
                                                for name in data.splits["val"]["image"]]).numpy()
    np.testing.assert_allclose(thresholds, f1_thresholds(val_scores, val_labels, verified=val_known), atol=1e-5)
    assert export.export_info["val_mAP"] == pytest.approx(
        multilabel_metrics(val_scores, val_labels, verified=val_known)["mAP"], abs=1e-4)

    # ignore-evaluate gives the run's test block
    evaluate_main(["--model", str(run / "export"), "--data", str(single_positive), "--out", str(tmp_path / "eval.json"),
                   "--batch-size", "4", "--num-workers", "0"])
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    for name in ("mAP", "CF1", "OF1", "CF1_val_thresholds", "OF1_val_thresholds", "bce"):
        assert evaluated[name] == pytest.approx(test[name], abs=1e-9), name
    assert evaluated["verified_entries"] == 14
    assert capsys.readouterr().out.rstrip().endswith("(on the 14 verified labels only; 0 classes without a verified "
                                                    "positive count as AP 0)")


def rewritten(source, target, change_split=None, change_meta=None):
    """A copy of the dataset at `source` in `target`, each split through `change_split`, the metadata through
    `change_meta`."""
    from datasets import DatasetDict, load_from_disk

    splits = load_from_disk(str(source))
    DatasetDict({name: change_split(split) if change_split else split for name, split in splits.items()}
                ).save_to_disk(str(target))
    meta = json.loads((source / META_FILE).read_text())
    if change_meta:
        change_meta(meta)
    (target / META_FILE).write_text(json.dumps(meta))
    return target


def test_a_dataset_promising_a_verified_mask_without_one_stops_with_one_line(openimages, trained, tmp_path, capsys):
    # as the converter wrote OpenImages before the mask: the protocol key, no column (the trained run lends
    # ignore-evaluate an export)
    old = rewritten(openimages, tmp_path / "old", lambda split: split.remove_columns("verified"))
    with pytest.raises(SystemExit) as stop:
        evaluate_main(["--model", str(trained[0] / "export"), "--data", str(old), "--num-workers", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {old}: split 'train' has no column 'verified', which {META_FILE} promises "
        "(protocol.unverified_labels); convert the dataset again"]


def test_a_verified_mask_without_its_protocol_key_or_missing_a_positive_is_refused(openimages, tmp_path):
    without_key = rewritten(openimages, tmp_path / "without_key",
                            change_meta=lambda meta: meta["protocol"].pop("unverified_labels"))
    with pytest.raises(SPMLError) as error:
        load_dataset(without_key)
    assert str(error.value) == (f"{without_key}: split 'train' has a column 'verified', but {META_FILE} has no "
                                "protocol.unverified_labels saying its labels are incomplete")

    def unverify_the_first_positive(split):
        verified = [list(row) for row in split["verified"]]
        verified[0] = [0] * len(verified[0])  # train a1, val v1, test t1: each has a positive
        return split.remove_columns("verified").add_column("verified", verified, feature=split.features["verified"])

    unverified = rewritten(openimages, tmp_path / "unverified", unverify_the_first_positive)
    with pytest.raises(SPMLError) as error:
        load_dataset(unverified)
    assert str(error.value) == (f"{unverified}: split 'train' row 0: class 1 is labelled present but not verified "
                                "(column 'verified' holds 0)")


def test_a_converter_writing_a_positive_it_did_not_verify_is_refused(tmp_path):
    labels, observed = np.array([[1, 0], [0, 1]], np.uint8), np.array([[1, 0], [0, 1]], np.int8)
    splits = {name: SplitArrays(["a.png", "b.png"], labels, observed, np.array([[1, 1], [0, 1]], np.uint8))
              for name in ("train", "val", "test")}
    splits["test"].verified = np.array([[1, 1], [1, 0]], np.uint8)
    with pytest.raises(SPMLError) as error:
        write_dataset(tmp_path / "out", splits, ["x", "y"], image_root=".", source="unit-test",
                      protocol={"unverified_labels": "unknown"})
    assert str(error.value) == "split 'test' row 1: class 1 is labelled present but not verified (column " \
                               "'verified' holds 0)"
    assert not (tmp_path / "out").exists()
