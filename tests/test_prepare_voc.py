"""data_scripts/prepare_voc.py against a tiny VOC2012 tree in the real layout."""
import numpy as np
import pytest
from PIL import Image

from data_script import load_script, run_script
from ignore.data.format import load_dataset
from protocol_check import assert_follows_protocol

prepare_voc = load_script("prepare_voc")

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
# image id -> the values that are not -1, in the (unsorted) order the files list them.
OFFICIAL_TRAIN = {
    "2008_000010": {"dog": 1, "person": 1, "cat": 0},
    "2008_000002": {"aeroplane": 1},
    "2007_000005": {"chair": 0, "tvmonitor": 1},
    "2008_000002-b": {"bird": 1, "boat": 1, "sheep": 0},  # "-b.jpg" sorts before ".jpg"
    "2007_000099": {"car": 0, "bus": 0},  # difficult only: no positive, dropped
    "2009_000001": {"train": 1},
    "2007_000032": {"person": 1, "sofa": 1, "train": 1},
}
OFFICIAL_VAL = {
    "2008_000100": {"cow": 1, "horse": 0},
    "2008_000099": {"bottle": 0},  # dropped
    "2007_000200": {"motorbike": 1, "person": 1},
    "2007_000150": {"pottedplant": 1, "diningtable": 1, "chair": 0},
}
TRAIN_IMAGES = [
    "JPEGImages/2007_000005.jpg",
    "JPEGImages/2007_000032.jpg",
    "JPEGImages/2008_000002-b.jpg",
    "JPEGImages/2008_000002.jpg",
    "JPEGImages/2008_000010.jpg",
    "JPEGImages/2009_000001.jpg",
]
TRAIN_LABELS = np.array([
    # ae bi bi bo bo bu ca ca ch co di do ho mo pe po sh so tr tv
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],  # 2007_000005
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0],  # 2007_000032
    [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # 2008_000002-b
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # 2008_000002
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0],  # 2008_000010
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],  # 2009_000001
], dtype=np.uint8)
TEST_IMAGES = ["JPEGImages/2007_000150.jpg", "JPEGImages/2007_000200.jpg", "JPEGImages/2008_000100.jpg"]
TEST_LABELS = np.array([
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0],  # 2007_000150
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0],  # 2007_000200
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # 2008_000100
], dtype=np.uint8)


def write_voc(root):
    """A VOC2012 directory: ImageSets/Main/<cls>_{train,val}.txt and 8x8 JPEGImages."""
    main_dir, jpeg_dir = root / "ImageSets" / "Main", root / "JPEGImages"
    main_dir.mkdir(parents=True)
    jpeg_dir.mkdir()
    for phase, images in (("train", OFFICIAL_TRAIN), ("val", OFFICIAL_VAL)):
        for name in VOC_CLASSES:
            # The real files right-align the value: "2008_000002  1", "2008_000003 -1".
            lines = [f"{image_id} {values.get(name, -1):2d}\n" for image_id, values in images.items()]
            (main_dir / f"{name}_{phase}.txt").write_text("".join(lines))
        for image_id in images:
            Image.new("RGB", (8, 8), (200, 30, 30)).save(jpeg_dir / f"{image_id}.jpg")
    return root


@pytest.fixture
def voc_root(tmp_path):
    return write_voc(tmp_path / "VOCdevkit" / "VOC2012")


def test_read_voc_phase_exact_rows_and_labels(voc_root):
    images, labels = prepare_voc.read_voc_phase(voc_root, "train")
    assert images == TRAIN_IMAGES
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, TRAIN_LABELS)
    images, labels = prepare_voc.read_voc_phase(voc_root, "val")
    assert images == TEST_IMAGES
    np.testing.assert_array_equal(labels, TEST_LABELS)


def test_main_writes_the_protocol(voc_root, tmp_path, capsys):
    out = tmp_path / "voc_out"
    prepare_voc.main(["--root", str(voc_root), "--out", str(out)])
    assert "voc2012: 20 classes; train 5, val 1, test 3" in capsys.readouterr().out
    dataset = load_dataset(out)
    assert dataset.class_names == VOC_CLASSES
    assert dataset.image_root == voc_root.resolve()
    assert dataset.meta["sizes"] == {"train": 5, "val": 1, "test": 3}
    assert_follows_protocol(dataset, TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def test_script_runs_as_a_file(voc_root, tmp_path):
    result = run_script("prepare_voc", "--root", voc_root, "--out", tmp_path / "voc_out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "voc_out" / "spml_meta.json").is_file()
    (voc_root / "ImageSets" / "Main" / "cow_val.txt").unlink()
    result = run_script("prepare_voc", "--root", voc_root, "--out", tmp_path / "voc_out")
    assert result.returncode == 2
    assert result.stderr == f"error: {voc_root / 'ImageSets' / 'Main'}: 1 class file(s) missing: cow_val.txt\n"


def replace_line(path, line_number, text):
    lines = path.read_text().splitlines(keepends=True)
    lines[line_number - 1] = text
    path.write_text("".join(lines))


def bad_missing_files(root):
    for name in ("cat_train.txt", "dog_train.txt", "sofa_val.txt"):
        (root / "ImageSets" / "Main" / name).unlink()
    return "3 class file(s) missing: cat_train.txt, dog_train.txt, sofa_val.txt"


def bad_root(root):
    (root / "ImageSets" / "Main").rename(root / "ImageSets" / "Segmentation")
    return "Main: directory not found (--root must be the VOCdevkit/VOC2012 directory)"


def bad_line(root):
    replace_line(root / "ImageSets" / "Main" / "horse_train.txt", 3, "2007_000005\n")
    return "horse_train.txt:3: expected '<image id> <value>', got '2007_000005'"


def bad_value(root):
    replace_line(root / "ImageSets" / "Main" / "bus_val.txt", 2, "2008_000099  2\n")
    return "bus_val.txt:2: value 2 is not -1, 0 or 1"


def bad_duplicate_id(root):
    replace_line(root / "ImageSets" / "Main" / "boat_train.txt", 2, "2008_000010 -1\n")
    return "boat_train.txt:2: image id 2008_000010 is listed twice"


def bad_disagreeing_ids(root):
    replace_line(root / "ImageSets" / "Main" / "sheep_val.txt", 4, "2007_000151  1\n")
    return ("sheep_val.txt: lists other image ids than aeroplane_val.txt "
            "(1 extra, e.g. ['2007_000151']; 1 absent, e.g. ['2007_000150'])")


def bad_missing_image(root):
    (root / "JPEGImages" / "2008_000100.jpg").unlink()
    return "2008_000100.jpg: image file not found (1 missing in all;"


@pytest.mark.parametrize("break_input", [bad_missing_files, bad_root, bad_line, bad_value, bad_duplicate_id,
                                         bad_disagreeing_ids, bad_missing_image])
def test_bad_input_is_one_line_and_exit_2(voc_root, tmp_path, capsys, break_input):
    expected = break_input(voc_root)
    with pytest.raises(SystemExit) as exit_info:
        prepare_voc.main(["--root", str(voc_root), "--out", str(tmp_path / "voc_out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert expected in error
    assert not (tmp_path / "voc_out").exists()
