"""load_hf_dataset against tiny HuggingFace datasets written with save_to_disk."""
import io
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Sequence, Value
from PIL import Image as PILImage

from ignore.data.bring_your_own import load_hf_dataset
from ignore.data.format import FORMAT_VERSION
from ignore.data.images import open_rgb
from ignore.data.protocol import observe_positives, split_train_val
from ignore.errors import SPMLError

NAMES = ["cat", "dog", "car"]
# Ten training rows (one with no label at all) and four test rows, as class indices.
TRAIN_INDICES = [[0], [1, 2], [2], [0, 1, 2], [], [1], [0, 2], [2, 1], [0], [1]]
TEST_INDICES = [[1], [0, 2], [2], [0]]


def multi_hot(index_lists, num_classes=3):
    matrix = np.zeros((len(index_lists), num_classes), dtype=np.uint8)
    for row, indices in enumerate(index_lists):
        matrix[row, indices] = 1
    return matrix


def colour(split, row):
    """A colour unique to (split, row): an opened image proves which row it came from."""
    return ({"train": 10, "test": 100, "validation": 200}[split] + row, 7, 9)


def png_bytes(rgb):
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def embedded_split(split, index_lists):
    features = Features({"picture": Image(), "tags": Sequence(ClassLabel(names=NAMES))})
    pictures = [{"bytes": png_bytes(colour(split, row)), "path": f"{split}{row}.png"}
                for row in range(len(index_lists))]
    return Dataset.from_dict({"picture": pictures, "tags": index_lists}, features=features)


def save(tmp_path, **splits):
    path = tmp_path / "hf"
    DatasetDict(splits).save_to_disk(str(path))
    return path


def test_an_empty_split_is_named(tmp_path):
    path = save(tmp_path, train=embedded_split("train", TRAIN_INDICES), test=embedded_split("test", []))
    with pytest.raises(SPMLError) as error:
        load_hf_dataset(path, "picture", "tags")
    assert str(error.value) == f"{path.resolve()}: split 'test' is empty"


def first_pixel(result, split, row):
    image = open_rgb(result.image_root, result.splits[split][row]["image"])
    assert image.mode == "RGB"
    return image.getpixel((0, 0))


def test_class_label_dataset_with_embedded_images(tmp_path):
    path = save(tmp_path, train=embedded_split("train", TRAIN_INDICES), test=embedded_split("test", TEST_INDICES))
    files_before = sorted(path.rglob("*"))
    result = load_hf_dataset(path, "picture", "tags")

    train_labels, test_labels = multi_hot(TRAIN_INDICES), multi_hot(TEST_INDICES)
    train_index, val_index = split_train_val(len(TRAIN_INDICES), 0.2, 1200)
    train_observed = observe_positives(train_labels, 1, 1200)
    assert result.class_names == NAMES
    assert result.meta["sizes"] == {"train": 8, "val": 2, "test": 4}
    assert result.meta["images_without_positive"] == {"train": int(4 in train_index), "val": int(4 in val_index),
                                                      "test": 0}
    assert (result.meta["format"], result.meta["version"]) == ("spml", FORMAT_VERSION)
    assert result.meta["source"] == f"huggingface:{path.resolve()}"
    for name, index in (("train", train_index), ("val", val_index)):
        split = result.splits[name]
        np.testing.assert_array_equal(np.array(split["labels"]), train_labels[index])
        np.testing.assert_array_equal(np.array(split["observed"]), train_observed[index])
        assert [first_pixel(result, name, row) for row in range(len(index))] == [colour("train", i) for i in index]
    np.testing.assert_array_equal(np.array(result.splits["test"]["labels"]), test_labels)
    np.testing.assert_array_equal(np.array(result.splits["test"]["observed"]),
                                  observe_positives(test_labels, 1, 1200))
    assert first_pixel(result, "test", 3) == colour("test", 3)
    assert sorted(path.rglob("*")) == files_before  # the user's directory is only read


def path_split(tmp_path, split, rows):
    """Multi-hot rows (plain int lists, as from_dict infers them) and relative image paths."""
    (tmp_path / "hf" / "images").mkdir(parents=True, exist_ok=True)
    for row in range(len(rows)):
        PILImage.new("RGB", (8, 8), colour(split, row)).save(tmp_path / "hf" / "images" / f"{split}{row}.png")
    return Dataset.from_dict({"file": [f"images/{split}{row}.png" for row in range(len(rows))], "y": rows})


def test_multi_hot_with_path_column_and_validation_split(tmp_path):
    train, validation, test = multi_hot(TRAIN_INDICES), multi_hot([[0, 1], [2], []]), multi_hot(TEST_INDICES)
    path = save(tmp_path, train=path_split(tmp_path, "train", train.tolist()),
                validation=path_split(tmp_path, "validation", validation.tolist()),
                test=path_split(tmp_path, "test", test.tolist()))
    result = load_hf_dataset(path, "file", "y")

    assert result.class_names == ["0", "1", "2"]
    assert result.meta["sizes"] == {"train": 10, "val": 3, "test": 4}
    assert result.meta["images_without_positive"] == {"train": 1, "val": 1, "test": 0}
    expected = (("train", train, "train"), ("val", validation, "validation"), ("test", test, "test"))
    for name, labels, source in expected:
        np.testing.assert_array_equal(np.array(result.splits[name]["labels"]), labels)
        np.testing.assert_array_equal(np.array(result.splits[name]["observed"]), observe_positives(labels, 1, 1200))
        assert [first_pixel(result, name, row) for row in range(len(labels))] == [
            colour(source, row) for row in range(len(labels))]


def test_observed_column_is_kept(tmp_path):
    given = np.where(multi_hot(TRAIN_INDICES) == 1, 1, -1).astype(np.int8)  # fully observed
    train = embedded_split("train", TRAIN_INDICES).add_column("observed", given.tolist())
    test = embedded_split("test", TEST_INDICES).add_column("observed", np.zeros((4, 3), int).tolist())
    result = load_hf_dataset(save(tmp_path, train=train, test=test), "picture", "tags")

    train_index, val_index = split_train_val(len(TRAIN_INDICES), 0.2, 1200)
    np.testing.assert_array_equal(np.array(result.splits["train"]["observed"]), given[train_index])
    np.testing.assert_array_equal(np.array(result.splits["val"]["observed"]), given[val_index])
    np.testing.assert_array_equal(np.array(result.splits["test"]["observed"]), np.zeros((4, 3)))
    assert result.meta["protocol"]["observed"] == "dataset"


def test_image_rows_holding_only_a_path(tmp_path, monkeypatch):
    """Older save_to_disk kept the path of an Image row without its bytes."""
    image_file = tmp_path / "outside.png"
    PILImage.new("RGB", (8, 8), (1, 2, 3)).save(image_file)
    (tmp_path / "hf").mkdir()
    features = Features({"picture": Image(), "tags": Sequence(ClassLabel(names=NAMES))})
    rows = {"picture": [{"bytes": None, "path": str(image_file)}] * 5, "tags": [[0], [1], [2], [0], [1]]}
    saved = DatasetDict(train=Dataset.from_dict(rows, features=features),
                        test=Dataset.from_dict(rows, features=features))
    monkeypatch.setattr("datasets.load_from_disk", lambda path: saved)
    result = load_hf_dataset(tmp_path / "hf", "picture", "tags")
    assert result.splits["test"][0]["image"] == {"bytes": None, "path": str(image_file)}
    assert first_pixel(result, "test", 0) == (1, 2, 3)


def int_lists_split(rows):
    return Dataset.from_dict({"picture": [png_bytes((0, 0, 0))] * len(rows), "y": rows},
                             features=Features({"picture": Image(), "y": Sequence(Value("int64"))}))


@pytest.mark.parametrize("image_column, label_column, message", [
    ("picture", "", "data.label_column is required with data.image_column"),
    ("", "tags", "data.image_column is required with data.label_column"),
    ("picture", "labels", "split 'train' has no column 'labels' (columns: picture, tags)"),
])
def test_config_and_column_errors(tmp_path, image_column, label_column, message):
    path = save(tmp_path, train=embedded_split("train", TRAIN_INDICES), test=embedded_split("test", TEST_INDICES))
    with pytest.raises(SPMLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_hf_dataset(path, image_column, label_column)


@pytest.mark.parametrize("test_rows, message", [
    ([[1], [0, 2], [-1]], "split 'test' row 2: class index -1 in column 'y' is outside 0..2"),
    ([[1, 0, 0], [0, 2, 1]], r"split 'test' row 1: column 'y' holds \[2\], only \(0, 1\) are allowed"),
    ([[1, 0, 0], [0, 1]], "split 'test' row 1: column 'y' has 2 values, the first train row has 3"),
])
def test_bad_label_rows(tmp_path, test_rows, message):
    train_rows = [[0], [1, 2], [2], [0, 1]] if "index" in message else [[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]]
    path = save(tmp_path, train=int_lists_split(train_rows), test=int_lists_split(test_rows))
    with pytest.raises(SPMLError, match=message):
        load_hf_dataset(path, "picture", "y")


def test_label_column_of_another_type(tmp_path):
    rows = Dataset.from_dict({"picture": [png_bytes((0, 0, 0))] * 5, "y": [["cat"]] * 5},
                             features=Features({"picture": Image(), "y": Sequence(Value("string"))}))
    message = r"column 'y' is List\(Value\('string'\)\); expected a list of class indices"
    with pytest.raises(SPMLError, match=message):
        load_hf_dataset(save(tmp_path, train=rows, test=rows), "picture", "y")


def test_a_test_split_is_needed(tmp_path):
    single = tmp_path / "single"
    embedded_split("train", TRAIN_INDICES).save_to_disk(str(single))
    with pytest.raises(SPMLError, match="a single Dataset without splits; a 'train' and a 'test' split are needed"):
        load_hf_dataset(single, "picture", "tags")
    path = save(tmp_path, train=embedded_split("train", TRAIN_INDICES))
    with pytest.raises(SPMLError, match=r"no 'test' split \(splits: train\); a 'test' split is needed"):
        load_hf_dataset(path, "picture", "tags")


def test_embedded_images_stay_memory_mapped(tmp_path):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    noise = [{"bytes": png_bytes_of(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "path": None}
             for _ in range(120)]
    size = sum(len(item["bytes"]) for item in noise)
    assert size > 1_000_000  # noise does not compress: ~12 kB an image
    features = Features({"picture": Image(), "tags": Sequence(ClassLabel(names=NAMES))})
    rows = [[row % 3] for row in range(120)]
    path = save(tmp_path, train=Dataset.from_dict({"picture": noise[:100], "tags": rows[:100]}, features=features),
                test=Dataset.from_dict({"picture": noise[100:], "tags": rows[100:]}, features=features))
    before = pa.total_allocated_bytes()
    result = load_hf_dataset(path, "picture", "tags")
    assert pa.total_allocated_bytes() - before < size / 10  # the label columns, not the images
    for name, split in result.splits.items():
        assert split.cache_files and all(Path(file["filename"]).is_relative_to(path) for file in split.cache_files), name
    assert open_rgb(result.image_root, result.splits["test"][3]["image"]).getpixel((0, 0)) == tuple(
        PILImage.open(io.BytesIO(noise[103]["bytes"])).getpixel((0, 0)))


def png_bytes_of(pixels):
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
