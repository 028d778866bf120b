"""Bad datasets and bad images: one SPMLError naming the file, split or column; the item contract."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_script import run_script
from ignore.data.format import META_FILE, SplitArrays, apply_protocol, load_dataset, write_dataset
from ignore.data.torch_dataset import SPMLImageDataset, collate_skipping
from ignore.data.views import eval_view, strong_view, weak_view
from ignore.errors import SPMLError

CLASS_NAMES = ["a", "b", "c", "d"]
NUM_TRAIN, NUM_TEST = 6, 3  # 6 official train -> 5 train + 1 val


def official_sets():
    labels = {
        "train": np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 1, 1]]),
        "test": np.array([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]),
    }
    return {phase: ([f"{phase}/{row}.png" for row in range(len(matrix))], matrix) for phase, matrix in labels.items()}


@pytest.fixture
def dataset_dir(tmp_path):
    """A tiny dataset in our format at tmp_path/ds, 8x8 PNGs under tmp_path/ds/images."""
    out = tmp_path / "ds"
    rng = np.random.default_rng(0)
    phases = official_sets()
    for phase, (names, _) in phases.items():
        (out / "images" / phase).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(out / "images" / name)
    splits, protocol = apply_protocol(*phases["train"], *phases["test"])
    write_dataset(out, splits, CLASS_NAMES, image_root="images", source="unit-test", protocol=protocol)
    return out


def image_dataset(path, split="train", **kwargs):
    dataset = load_dataset(path)
    return SPMLImageDataset(dataset.splits[split], dataset.image_root, {"image": eval_view(8)}, **kwargs)


def image_path(path, split="train", row=0):
    dataset = load_dataset(path)
    return dataset.image_root / dataset.splits[split][row]["image"]


def test_the_fixture_reads_back(dataset_dir):
    dataset = load_dataset(dataset_dir)
    assert [len(dataset.splits[name]) for name in ("train", "val", "test")] == [5, 1, 3]
    assert dataset.class_names == CLASS_NAMES
    assert dataset.image_root == dataset_dir / "images"
    item = image_dataset(dataset_dir)[0]
    assert item["image"].shape == (3, 8, 8) and item["index"] == 0


def test_missing_image(dataset_dir):
    missing = image_path(dataset_dir, row=2)
    missing.unlink()
    dataset = image_dataset(dataset_dir)
    dataset[1]  # the others still load
    with pytest.raises(SPMLError, match="image file not found") as error:
        dataset[2]
    assert str(error.value) == f"{missing}: image file not found"


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_undecodable_image(dataset_dir, damage):
    target = image_path(dataset_dir, split="test", row=1)
    data = target.read_bytes()
    if damage == "random_bytes":
        target.write_bytes(np.random.default_rng(1).bytes(len(data)))
    else:
        target.write_bytes(data[: len(data) // 2])
    with pytest.raises(SPMLError, match="cannot decode image") as error:
        image_dataset(dataset_dir, split="test")[1]
    assert str(error.value).startswith(f"{target}: cannot decode image")
    assert "\n" not in str(error.value)


# PIL warns above its pixel limit and refuses above twice it: both are unreadable images
@pytest.mark.parametrize("side, pixels", [(40, 1600), (50, 2500)])
def test_decompression_bomb_is_unreadable_and_skippable(dataset_dir, monkeypatch, side, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    target = image_path(dataset_dir, row=2)
    Image.new("L", (side, side)).save(target)
    with pytest.raises(SPMLError) as error:
        image_dataset(dataset_dir)[2]
    assert str(error.value).startswith(
        f"{target}: cannot decode image (Image size ({pixels} pixels) exceeds limit of")
    assert "\n" not in str(error.value)
    assert image_dataset(dataset_dir, bad_images="skip")[2] == {"skipped": 2}


def test_directory_not_in_our_format(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "dataset_dict.json").write_text("{}")
    with pytest.raises(SPMLError, match="not a dataset in our format") as error:
        load_dataset(tmp_path / "plain")
    assert str(tmp_path / "plain") in str(error.value) and META_FILE in str(error.value)
    with pytest.raises(SPMLError, match="dataset directory not found"):
        load_dataset(tmp_path / "absent")


def test_wrong_format_version(dataset_dir):
    meta_path = dataset_dir / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SPMLError, match="version 99") as error:
        load_dataset(dataset_dir)
    assert str(meta_path) in str(error.value) and "'spml' version 1" in str(error.value)


def test_meta_class_names_disagree_with_the_splits(dataset_dir):
    meta_path = dataset_dir / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["class_names"] = CLASS_NAMES + ["e"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SPMLError, match="split 'train' row 0: column 'labels' has 4 values, spml_meta.json names 5"):
        load_dataset(dataset_dir)


def rewrite_test_split(dataset_dir, labels, observed, lengths=(4, 4)):
    """A copy of the dataset at dataset_dir/../rebuilt whose test split has the given label rows.

    lengths: the fixed lengths of the labels and observed features (-1: variable).
    """
    from datasets import Dataset, DatasetDict, Features, Sequence, Value, load_from_disk

    original = load_from_disk(str(dataset_dir))
    features = Features({
        "image": Value("string"),
        "labels": Sequence(Value("int64"), length=lengths[0]),
        "observed": Sequence(Value("int64"), length=lengths[1]),
    })
    bad_test = Dataset.from_dict({"image": original["test"]["image"][:len(labels)], "labels": labels,
                                  "observed": observed}, features=features)
    rebuilt = dataset_dir.parent / "rebuilt"
    DatasetDict({"train": original["train"], "val": original["val"], "test": bad_test}).save_to_disk(str(rebuilt))
    (rebuilt / META_FILE).write_text((dataset_dir / META_FILE).read_text())
    return rebuilt


GOOD_ROW = [0, 1, 0, 0]


@pytest.mark.parametrize("column", ["labels", "observed"])
def test_one_split_saved_with_another_label_length(dataset_dir, column):
    rows = {"labels": [GOOD_ROW] * 3, "observed": [GOOD_ROW] * 3, column: [[0, 1, 0]] * 3}
    lengths = (3, 4) if column == "labels" else (4, 3)
    rebuilt = rewrite_test_split(dataset_dir, rows["labels"], rows["observed"], lengths)
    with pytest.raises(SPMLError) as error:
        load_dataset(rebuilt)
    assert str(error.value) == (f"{rebuilt}: split 'test' row 0: column '{column}' has 3 values, "
                                f"{META_FILE} names 4 classes")


@pytest.mark.parametrize("column, row, message", [
    ("labels", [0, 1, 0], "has 3 values, spml_meta.json names 4 classes"),
    ("observed", [0, 1, 0, 0, 0], "has 5 values, spml_meta.json names 4 classes"),
    ("labels", [0, 7, 0, 1], "holds [7], only (0, 1) are allowed"),
    ("labels", [-1, 1, 0, 0], "holds [-1], only (0, 1) are allowed"),
    ("observed", [5, -3, 0, 1], "holds [-3, 5], only (-1, 0, 1) are allowed"),
])
def test_a_bad_label_row_is_named(dataset_dir, column, row, message):
    """Variable-length label columns (no fixed length in the features): the row is checked and named."""
    rows = {"labels": [GOOD_ROW] * 3, "observed": [GOOD_ROW] * 3}
    rows[column] = [GOOD_ROW, GOOD_ROW, row]
    rebuilt = rewrite_test_split(dataset_dir, rows["labels"], rows["observed"], lengths=(-1, -1))
    with pytest.raises(SPMLError) as error:
        load_dataset(rebuilt)
    assert str(error.value) == f"{rebuilt}: split 'test' row 2: column '{column}' {message}"


def test_an_empty_split_is_named(dataset_dir):
    rebuilt = rewrite_test_split(dataset_dir, [], [])
    with pytest.raises(SPMLError) as error:
        load_dataset(rebuilt)
    assert str(error.value) == f"{rebuilt}: split 'test' is empty"


@pytest.mark.parametrize("text, kind", [("[1, 2]", "list"), ('"spml"', "str"), ("null", "NoneType")])
def test_metadata_that_is_not_a_json_object(dataset_dir, text, kind):
    (dataset_dir / META_FILE).write_text(text)
    with pytest.raises(SPMLError) as error:
        load_dataset(dataset_dir)
    assert str(error.value) == f"{dataset_dir / META_FILE}: expected a JSON object, got a {kind}"


def arrays(num_rows, num_classes=4):
    labels = np.zeros((num_rows, num_classes), dtype=np.uint8)
    labels[:, 0] = 1
    return SplitArrays([f"{row}.png" for row in range(num_rows)], labels, labels.astype(np.int8))


def test_write_dataset_refuses_an_empty_split(tmp_path):
    splits = {"train": arrays(3), "val": arrays(0), "test": arrays(2)}
    with pytest.raises(SPMLError, match="^split 'val' is empty$"):
        write_dataset(tmp_path / "out", splits, CLASS_NAMES, image_root="images", source="x", protocol={})
    assert not (tmp_path / "out").exists()


def test_write_dataset_refuses_labels_of_the_wrong_shape(tmp_path):
    splits = {"train": arrays(3), "val": arrays(1), "test": arrays(2)}
    splits["test"].labels = np.zeros((2, 3), dtype=np.uint8)
    with pytest.raises(SPMLError) as error:
        write_dataset(tmp_path / "out", splits, CLASS_NAMES, image_root="images", source="x", protocol={})
    assert str(error.value) == "split 'test': labels has shape (2, 3), expected (2, 4)"
    assert not (tmp_path / "out").exists()


def test_bad_images_skip(dataset_dir):
    image_path(dataset_dir, row=3).unlink()
    dataset = image_dataset(dataset_dir, bad_images="skip")
    assert dataset[3] == {"skipped": 3}
    assert dataset[(2, 3)] == {"skipped": 3}
    batch = collate_skipping([dataset[0], dataset[3], dataset[4]])
    assert batch["skipped"].tolist() == [3]
    assert batch["index"].tolist() == [0, 4]
    assert batch["image"].shape == (2, 3, 8, 8)
    torch.testing.assert_close(batch["labels"], dataset.labels[[0, 4]])
    assert collate_skipping([dataset[0]])["skipped"].tolist() == []


def test_all_skipped_batch_raises(dataset_dir):
    for row in (1, 3):
        image_path(dataset_dir, row=row).unlink()
    dataset = image_dataset(dataset_dir, bad_images="skip")
    with pytest.raises(SPMLError, match=r"every image of a batch was unreadable \(dataset rows \[1, 3\]\)"):
        collate_skipping([dataset[1], dataset[3]])


def test_bad_images_error_is_the_default(dataset_dir):
    image_path(dataset_dir, row=3).unlink()
    with pytest.raises(SPMLError, match="image file not found"):
        image_dataset(dataset_dir)[3]


def test_unknown_bad_images_policy(dataset_dir):
    with pytest.raises(SPMLError, match="data.bad_images must be one of .*got 'ignore'"):
        image_dataset(dataset_dir, bad_images="ignore")


def test_prepare_demo_refuses_a_foreign_directory(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = run_script("prepare_demo", "--out", foreign, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(foreign) in lines[0] and "not a demo dataset" in lines[0]
    assert (foreign / "notes.txt").read_text() == "keep me"  # nothing deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no build directory left


# --- the item contract ---------------------------------------------------------------

@pytest.fixture
def two_view_dataset(dataset_dir):
    dataset = load_dataset(dataset_dir)
    views = {"weak": weak_view(16), "strong": strong_view(16)}
    return SPMLImageDataset(dataset.splits["train"], dataset.image_root, views, seed=3), dataset.splits["train"]


def test_item_contract(two_view_dataset):
    dataset, split = two_view_dataset
    assert len(dataset) == 5
    for row in range(len(dataset)):
        item = dataset[(0, row)]
        assert set(item) == {"weak", "strong", "labels", "observed", "index"}
        assert item["weak"].shape == item["strong"].shape == (3, 16, 16)
        assert item["weak"].dtype == torch.float32
        assert item["labels"].dtype == item["observed"].dtype == torch.float32
        assert item["labels"].tolist() == [float(v) for v in split[row]["labels"]]
        assert item["observed"].tolist() == [float(v) for v in split[row]["observed"]]
        assert item["index"] == row
        assert item["observed"].sum() == 1  # the single positive protocol, every row has one


def test_views_are_seeded_by_seed_epoch_row(two_view_dataset):
    dataset, split = two_view_dataset
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = dataset[(0, 2)]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(456)  # another global state gives the same views
    again = dataset[(0, 2)]
    assert torch.equal(first["weak"], again["weak"]) and torch.equal(first["strong"], again["strong"])

    later = [dataset[(epoch, 2)] for epoch in range(1, 6)]
    assert not torch.equal(first["strong"], later[0]["strong"])  # another epoch, other views
    weak = [first["weak"]] + [item["weak"] for item in later]
    assert any(not torch.equal(weak[0], other) for other in weak[1:])  # the flip varies too

    # another dataset seed changes the views of the same (epoch, row)
    reseeded = SPMLImageDataset(split, dataset.image_root, dataset.views, seed=4)
    assert not torch.equal(reseeded[(0, 2)]["strong"], first["strong"])
