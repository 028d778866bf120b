"""data_scripts/prepare_nuswide.py against a tiny NUS-WIDE written in the real layout."""
import numpy as np
import pytest
from PIL import Image

from data_script import load_script, run_script
from ignore.data.format import load_dataset
from ignore.data.protocol import observe_positives, split_train_val
from protocol_check import assert_follows_protocol

prepare = load_script("prepare_nuswide")

CONCEPTS = ["animal", "sky", "water", "person"]
# Deliberately not sorted: rows must keep the image-list order.
TRAIN_LIST = [
    "water\\0003_3001.jpg", "actor\\0001_1001.jpg", "sky\\0002_2001.jpg", "actor\\0004_1002.jpg",
    "water\\0005_3002.jpg", "animal\\0006_4001.jpg", "sky\\0007_2002.jpg", "animal\\0008_4002.jpg",
    "actor\\0009_1003.jpg", "sky\\0010_2003.jpg",
]
TRAIN_LABELS = np.array([
    [0, 1, 1, 0],
    [0, 0, 0, 1],
    [0, 0, 0, 0],  # no label at all: kept
    [1, 1, 0, 1],
    [0, 0, 1, 0],
    [1, 0, 0, 0],
    [1, 1, 1, 1],
    [0, 0, 0, 0],  # no label at all, and lands in val: kept
    [0, 0, 0, 1],
    [0, 1, 0, 0],
], dtype=np.uint8)
TEST_LIST = ["sky\\0011_2004.jpg", "actor\\0012_1004.jpg", "water\\0013_3003.jpg", "animal\\0014_4003.jpg"]
TEST_LABELS = np.array([
    [0, 1, 0, 1],
    [0, 0, 0, 0],  # no label at all: kept
    [0, 1, 1, 0],
    [1, 0, 1, 1],
], dtype=np.uint8)


def write_nuswide(root):
    """The real layout: Windows-style image lists, one label file per concept and phase, CRLF."""
    (root / "ImageList").mkdir(parents=True)
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    (root / "Concepts81.txt").write_text("".join(f"{concept}\r\n" for concept in CONCEPTS))
    for phase, image_list, labels in (("Train", TRAIN_LIST, TRAIN_LABELS), ("Test", TEST_LIST, TEST_LABELS)):
        (root / "ImageList" / f"{phase}Imagelist.txt").write_text("".join(f"{name}\r\n" for name in image_list))
        for column, concept in enumerate(CONCEPTS):
            (labels_dir / f"Labels_{concept}_{phase}.txt").write_text("".join(f"{v}\r\n" for v in labels[:, column]))
        for name in image_list:
            path = root / "Flickr" / name.replace("\\", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (200, 30, 30)).save(path, "JPEG")
    return root


@pytest.fixture
def root(tmp_path):
    return write_nuswide(tmp_path / "NUS-WIDE")


def label_file(root, concept, phase):
    return root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{phase}.txt"


def main_error(root, out, capsys):
    """Run main in-process on a broken dataset: exit code 2 and a one-line message."""
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--root", str(root), "--out", str(out)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not out.exists()
    return lines[0]


def test_read_concepts_and_phases(root):
    assert prepare.read_concepts(root) == CONCEPTS
    images, labels = prepare.read_nuswide_phase(root, CONCEPTS, "Train")
    assert images.tolist() == [
        "water/0003_3001.jpg", "actor/0001_1001.jpg", "sky/0002_2001.jpg", "actor/0004_1002.jpg",
        "water/0005_3002.jpg", "animal/0006_4001.jpg", "sky/0007_2002.jpg", "animal/0008_4002.jpg",
        "actor/0009_1003.jpg", "sky/0010_2003.jpg",
    ]
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [
        [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1], [0, 0, 1, 0],
        [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0],
    ])
    images, labels = prepare.read_nuswide_phase(root, CONCEPTS, "Test")
    assert images.tolist() == ["sky/0011_2004.jpg", "actor/0012_1004.jpg", "water/0013_3003.jpg",
                               "animal/0014_4003.jpg"]
    np.testing.assert_array_equal(labels, [[0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]])


def test_concept_count_follows_the_file(root):
    (root / "Concepts81.txt").write_text("sky\nperson\n")
    concepts = prepare.read_concepts(root)
    assert concepts == ["sky", "person"]
    _, labels = prepare.read_nuswide_phase(root, concepts, "Test")
    np.testing.assert_array_equal(labels, TEST_LABELS[:, [1, 3]])


def check_converted(out, root):
    dataset = load_dataset(out)
    train_images = [name.replace("\\", "/") for name in TRAIN_LIST]
    test_images = [name.replace("\\", "/") for name in TEST_LIST]
    assert dataset.class_names == CONCEPTS
    assert dataset.image_root == (root / "Flickr").resolve()
    assert dataset.meta["sizes"] == {"train": 8, "val": 2, "test": 4}
    assert dataset.meta["images_without_positive"] == {"train": 1, "val": 1, "test": 1}
    assert_follows_protocol(dataset, train_images, TRAIN_LABELS, test_images, TEST_LABELS)
    rows = dataset.splits["test"]
    # Unlabelled rows are present and stay unobserved.
    assert sorted(np.flatnonzero(np.array(rows["observed"]).sum(1) == 0)) == [1]
    for split in dataset.splits.values():
        for name in split["image"]:
            assert (dataset.image_root / name).is_file()


def test_convert_in_process(root, tmp_path, capsys):
    prepare.main(["--root", str(root), "--out", str(tmp_path / "out")])
    assert "nuswide: 4 classes; train 8, val 2, test 4" in capsys.readouterr().out
    check_converted(tmp_path / "out", root)


def test_convert_as_a_script(root, tmp_path):
    result = run_script("prepare_nuswide", "--root", root, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    check_converted(tmp_path / "out", root)


def test_missing_concepts_file(root, tmp_path, capsys):
    (root / "Concepts81.txt").unlink()
    assert "Concepts81.txt: file not found" in main_error(root, tmp_path / "out", capsys)


def test_duplicate_concept(root, tmp_path, capsys):
    (root / "Concepts81.txt").write_text("animal\nsky\nwater\nsky\n")
    assert "Concepts81.txt, line 4: concept 'sky' repeats line 2" in main_error(root, tmp_path / "out", capsys)


def test_missing_image_list(root, tmp_path, capsys):
    (root / "ImageList" / "TestImagelist.txt").unlink()
    assert main_error(root, tmp_path / "out", capsys).endswith("missing ImageList/TestImagelist.txt")


def test_missing_label_files_are_all_named(root, tmp_path, capsys):
    label_file(root, "water", "Train").unlink()
    label_file(root, "sky", "Test").unlink()
    message = main_error(root, tmp_path / "out", capsys)
    assert message.endswith("missing Groundtruth/TrainTestLabels/Labels_water_Train.txt, "
                            "Groundtruth/TrainTestLabels/Labels_sky_Test.txt")


def test_many_missing_label_files_are_counted(root, tmp_path, capsys):
    for concept in CONCEPTS:
        for phase in ("Train", "Test"):
            label_file(root, concept, phase).unlink()
    message = main_error(root, tmp_path / "out", capsys)
    assert "missing Groundtruth/TrainTestLabels/Labels_animal_Train.txt, " in message
    assert message.endswith("Labels_animal_Test.txt and 3 more")


def test_wrong_number_of_rows(root, tmp_path, capsys):
    label_file(root, "person", "Test").write_text("0\n1\n1\n")
    message = main_error(root, tmp_path / "out", capsys)
    assert "Labels_person_Test.txt: 3 rows, but " in message
    assert "TestImagelist.txt lists 4 images" in message


def test_value_not_0_or_1(root, tmp_path, capsys):
    label_file(root, "sky", "Train").write_text("1\n0\n0\n1\n2\n0\n0\n1\n0\n1\n")
    assert "Labels_sky_Train.txt, line 5: '2' is not 0 or 1" in main_error(root, tmp_path / "out", capsys)


def test_missing_image_file(root, tmp_path, capsys):
    (root / "Flickr" / "sky" / "0002_2001.jpg").unlink()
    message = main_error(root, tmp_path / "out", capsys)
    assert "sky/0002_2001.jpg: image file not found (1 missing in all;" in message


def test_missing_images_can_be_dropped_and_are_listed(root, tmp_path, capsys):
    (root / "Flickr" / "sky" / "0002_2001.jpg").unlink()  # train row 2
    (root / "Flickr" / "actor" / "0012_1004.jpg").unlink()  # test row 1
    out = tmp_path / "out"
    prepare.main(["--root", str(root), "--out", str(out), "--missing-images", "drop"])
    assert "dropped 2 rows whose image file is missing" in capsys.readouterr().out
    assert (out / "dropped_images.txt").read_text() == "sky/0002_2001.jpg\nactor/0012_1004.jpg\n"
    dataset = load_dataset(out)
    assert dataset.meta["protocol"]["dropped_missing_images"] == 2
    kept_train = np.delete(TRAIN_LABELS, 2, axis=0)
    train_index, val_index = split_train_val(len(kept_train))  # the protocol runs on the kept rows
    observed = observe_positives(kept_train)
    np.testing.assert_array_equal(np.array(dataset.splits["train"]["observed"]), observed[train_index])
    np.testing.assert_array_equal(np.array(dataset.splits["val"]["labels"]), kept_train[val_index])
    np.testing.assert_array_equal(np.array(dataset.splits["test"]["labels"]), np.delete(TEST_LABELS, 1, axis=0))
