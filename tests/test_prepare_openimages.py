"""data_scripts/prepare_openimages.py against tiny OpenImages CSVs in the real layout."""
import json

import numpy as np
import pytest
from PIL import Image

from data_script import load_script, run_script
from ignore.data.format import load_dataset
from ignore.data.protocol import observe_positives

prepare_openimages = load_script("prepare_openimages")

HEADER = "ImageID,Source,LabelName,Confidence\n"
DESCRIPTIONS = "/m/011k07,Tortoise\n/m/01yrx,Cat\n/m/0bt9lr,Dog\n/m/0k4j,Car\n"
TRAINABLE = "/m/01yrx\n/m/0bt9lr\n/m/011k07\n"  # no Car
TRAIN_ROWS = [  # line 2 onwards
    "000a1,verification,/m/01yrx,1",
    "000a1,verification,/m/0bt9lr,0",
    "000a1,crowdsource-verification,/m/01yrx,1",  # verified twice the same way: fine
    "0b2c3,verification,/m/0bt9lr,1",
    "0b2c3,verification,/m/011k07,1",
    "00ff0,verification,/m/01yrx,0",  # a verified negative only: no positive to train on
    "0c4d5,verification,/m/0k4j,1",  # Car only
]
VAL_ROWS = ["1a,verification,/m/0bt9lr,1", "1a,verification,/m/01yrx,0", "1b,verification,/m/011k07,0"]
TEST_ROWS = ["2a,verification,/m/01yrx,1", "2a,verification,/m/0k4j,0"]
IMAGE_IDS = {"train": ["000a1", "0b2c3", "00ff0", "0c4d5"], "validation": ["1a", "1b"], "test": ["2a"]}

# Tortoise Cat Dog Car; rows sorted by ImageID
TRAIN_OBSERVED = [[0, 1, -1, 0], [1, 0, 1, 0], [0, 0, 0, 1]]  # 000a1, 0b2c3, 0c4d5 (00ff0 dropped)
VAL_OBSERVED = [[0, -1, 1, 0], [-1, 0, 0, 0]]  # 1a, 1b (no positive, kept: its negative is verified)
TEST_OBSERVED = [[0, 1, 0, -1]]


def write_openimages(root, subset="all"):
    root.mkdir(parents=True)
    if subset == "all":
        (root / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n" + DESCRIPTIONS)
        names = {"train": "oidv7-train", "val": "oidv7-val", "test": "oidv7-test"}
        suffix = "-annotations-human-imagelabels.csv"
    else:  # the boxable descriptions come without a header row
        (root / "class-descriptions-boxable.csv").write_text(DESCRIPTIONS)
        names = {"train": "train", "val": "validation", "test": "test"}
        suffix = "-annotations-human-imagelabels-boxable.csv"
    for split, rows in (("train", TRAIN_ROWS), ("val", VAL_ROWS), ("test", TEST_ROWS)):
        (root / f"{names[split]}{suffix}").write_text(HEADER + "".join(f"{row}\n" for row in rows))
    (root / "oidv7-classes-trainable.txt").write_text(TRAINABLE)
    for folder, image_ids in IMAGE_IDS.items():
        (root / folder).mkdir()
        for image_id in image_ids:
            Image.new("RGB", (8, 8), (200, 30, 30)).save(root / folder / f"{image_id}.jpg")
    return root


@pytest.fixture
def openimages_root(tmp_path):
    return write_openimages(tmp_path / "openimages")


def observed_of(dataset, split):
    return dataset.splits[split]["observed"]


def test_verified_labels_become_plus_and_minus_one(openimages_root, tmp_path, capsys):
    out = tmp_path / "out"
    prepare_openimages.main(["--root", str(openimages_root), "--out", str(out)])
    assert ("openimages-all: 4 classes; train 3, val 2, test 1; dropped 1 training images without a verified "
            "positive and images without a verified label (train 0, val 0, test 0)") in capsys.readouterr().out
    dataset = load_dataset(out)
    assert dataset.class_names == ["Tortoise", "Cat", "Dog", "Car"]
    assert dataset.splits["train"]["image"] == ["train/000a1.jpg", "train/0b2c3.jpg", "train/0c4d5.jpg"]
    assert dataset.splits["val"]["image"] == ["validation/1a.jpg", "validation/1b.jpg"]
    assert observed_of(dataset, "train") == TRAIN_OBSERVED
    assert observed_of(dataset, "val") == VAL_OBSERVED
    assert observed_of(dataset, "test") == TEST_OBSERVED
    for split in ("train", "val", "test"):  # labels: the verified positives; verified: every verified label
        assert dataset.splits[split]["labels"] == (np.array(observed_of(dataset, split)) == 1).astype(int).tolist()
        assert dataset.splits[split]["verified"] == (np.array(observed_of(dataset, split)) != 0).astype(int).tolist()
    protocol = dataset.meta["protocol"]
    assert protocol["observation"] == "verified"
    assert protocol["dropped_train_without_verified_positive"] == 1
    assert protocol["unverified_labels"].startswith("unknown")
    assert dataset.meta["images_without_positive"] == {"train": 0, "val": 1, "test": 0}


def test_a_class_list_keeps_its_classes_and_counts_what_it_drops(openimages_root, tmp_path, capsys):
    out = tmp_path / "out"
    prepare_openimages.main(["--root", str(openimages_root), "--out", str(out),
                             "--classes", str(openimages_root / "oidv7-classes-trainable.txt")])
    assert "3 classes; train 2, val 2, test 1; dropped 1 training images" in capsys.readouterr().out
    dataset = load_dataset(out)
    assert dataset.class_names == ["Tortoise", "Cat", "Dog"]  # the descriptions' order
    assert observed_of(dataset, "train") == [[0, 1, -1], [1, 0, 1]]  # 0c4d5 had Car only
    assert observed_of(dataset, "test") == [[0, 1, 0]]
    protocol = dataset.meta["protocol"]
    assert protocol["skipped_rows_of_other_classes"] == {"train": 1, "val": 0, "test": 1}
    assert protocol["dropped_without_verified_label"] == {"train": 1, "val": 0, "test": 0}


def test_single_positive_draws_the_protocol_from_the_verified_positives(openimages_root, tmp_path):
    out = tmp_path / "out"
    prepare_openimages.main(["--root", str(openimages_root), "--out", str(out), "--single-positive"])
    dataset = load_dataset(out)
    for split in ("train", "val", "test"):
        labels = np.array(dataset.splits[split]["labels"])
        assert observed_of(dataset, split) == observe_positives(labels, 1, 1200).tolist()
    assert [sum(row) for row in observed_of(dataset, "train")] == [1, 1, 1]
    # the verified negatives are unknown to the methods, not to the metrics
    for split, verified_labels in (("train", TRAIN_OBSERVED), ("val", VAL_OBSERVED), ("test", TEST_OBSERVED)):
        assert dataset.splits[split]["verified"] == (np.array(verified_labels) != 0).astype(int).tolist()
    assert dataset.meta["protocol"]["observation"] == "single_positive"


def test_boxable_descriptions_without_header(tmp_path):
    root = write_openimages(tmp_path / "boxable", subset="boxable")
    result = run_script("prepare_openimages", "--root", root, "--out", tmp_path / "out", "--subset", "boxable")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "out" / "spml_meta.json").read_text())
    assert meta["class_names"] == ["Tortoise", "Cat", "Dog", "Car"] and meta["source"] == "openimages-boxable"
    assert meta["sizes"] == {"train": 3, "val": 2, "test": 1}


def append_train_row(root, row):
    path = root / "oidv7-train-annotations-human-imagelabels.csv"
    path.write_text(path.read_text() + row + "\n")


def bad_confidence(root):
    append_train_row(root, "000a1,verification,/m/0k4j,0.5")
    return "oidv7-train-annotations-human-imagelabels.csv line 9: Confidence '0.5' is neither 1 nor 0"


def bad_unknown_class(root):
    append_train_row(root, "000a1,verification,/m/0zzz,1")
    return "oidv7-train-annotations-human-imagelabels.csv line 9: LabelName /m/0zzz is not in the class descriptions"


def bad_verified_both_ways(root):
    append_train_row(root, "000a1,verification,/m/0bt9lr,1")
    return ("oidv7-train-annotations-human-imagelabels.csv line 9: image 000a1, class /m/0bt9lr verified present "
            "here and absent on line 3")


def bad_missing_column(root):
    path = root / "oidv7-test-annotations-human-imagelabels.csv"
    path.write_text("ImageID,Source,LabelName\n2a,verification,/m/01yrx\n")
    return "oidv7-test-annotations-human-imagelabels.csv line 1: missing column 'Confidence'"


def bad_short_row(root):
    append_train_row(root, "000a1,verification")
    return "oidv7-train-annotations-human-imagelabels.csv line 9: expected 4 fields, got 2"


def bad_missing_labels_file(root):
    (root / "oidv7-val-annotations-human-imagelabels.csv").unlink()
    return "oidv7-val-annotations-human-imagelabels.csv: file not found"


def bad_description_row(root):
    (root / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n/m/011k07,Tortoise\n/m/01yrx\n")
    return "oidv7-class-descriptions.csv line 3: expected 2 fields (LabelName,DisplayName), got 1"


def bad_missing_image(root):
    (root / "validation" / "1b.jpg").unlink()
    return "validation/1b.jpg: image file not found (1 missing in all;"


@pytest.mark.parametrize("break_input", [bad_confidence, bad_unknown_class, bad_verified_both_ways, bad_missing_column,
                                         bad_short_row, bad_missing_labels_file, bad_description_row,
                                         bad_missing_image])
def test_bad_input_is_one_line_and_exit_2(openimages_root, tmp_path, capsys, break_input):
    expected = break_input(openimages_root)
    with pytest.raises(SystemExit) as exit_info:
        prepare_openimages.main(["--root", str(openimages_root), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert expected in error
    assert not (tmp_path / "out").exists()


def test_a_class_list_naming_an_undescribed_class_is_one_line(openimages_root, tmp_path, capsys):
    (openimages_root / "oidv7-classes-trainable.txt").write_text("/m/01yrx\n/m/0nope\n")
    with pytest.raises(SystemExit):
        prepare_openimages.main(["--root", str(openimages_root), "--out", str(tmp_path / "out"),
                                 "--classes", str(openimages_root / "oidv7-classes-trainable.txt")])
    error = capsys.readouterr().err
    assert "oidv7-classes-trainable.txt line 2: /m/0nope is not in oidv7-class-descriptions.csv" in error
