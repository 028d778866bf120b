"""data_scripts/prepare_cub.py against a tiny CUB-200-2011 written in the real layout."""
import numpy as np
import pytest
from PIL import Image

from data_script import load_script, run_script
from ignore.data.format import load_dataset
from protocol_check import assert_follows_protocol

prepare = load_script("prepare_cub")

ATTRIBUTES = ["has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger", "has_wing_color::blue",
              "has_wing_color::brown", "has_size::small_(5_-_9_in)"]
IMAGES = {  # image_id: path under images/
    1: "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
    2: "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
    3: "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
    4: "002.Laysan_Albatross/Laysan_Albatross_0081_1280.jpg",
    5: "003.Sooty_Albatross/Sooty_Albatross_0031_1066.jpg",
    6: "003.Sooty_Albatross/Sooty_Albatross_0040_796.jpg",
    7: "004.Groove_billed_Ani/Groove_Billed_Ani_0078_1780.jpg",
}
IS_TRAINING = {1: 1, 2: 0, 3: 1, 4: 1, 5: 0, 6: 1, 7: 1}  # interleaved, as in the release
LABELS = np.array([  # row = image_id - 1
    [1, 0, 1, 0, 0],
    [0, 1, 1, 0, 1],
    [0, 0, 0, 0, 0],  # no attribute present, train: kept
    [1, 1, 0, 1, 1],
    [0, 0, 0, 0, 0],  # no attribute present, test: kept
    [0, 0, 0, 0, 0],  # no attribute present, lands in val: kept
    [0, 1, 0, 1, 0],
], dtype=np.uint8)
TRAIN_IDS, TEST_IDS = [1, 3, 4, 6, 7], [2, 5]


def label_line(image_id, attribute_id):
    line = f"{image_id} {attribute_id} {LABELS[image_id - 1, attribute_id - 1]} {1 + attribute_id % 4} 12.5{image_id}"
    # A few real lines carry extra tokens.
    return line + " 0 1" if (image_id, attribute_id) in ((2, 3), (6, 1)) else line


def write_cub(parent):
    """CUB_200_2011/ with attributes.txt beside it (as released) and ids listed out of order."""
    root = parent / "CUB_200_2011"
    (root / "attributes").mkdir(parents=True)
    order = [4, 1, 7, 2, 6, 3, 5]
    (root / "images.txt").write_text("".join(f"{i} {IMAGES[i]}\n" for i in order))
    (root / "train_test_split.txt").write_text("".join(f"{i} {IS_TRAINING[i]}\n" for i in order))
    (parent / "attributes.txt").write_text("".join(f"{a} {name}\n" for a, name in enumerate(ATTRIBUTES, 1)))
    lines = [label_line(i, a) for i in order for a in range(1, len(ATTRIBUTES) + 1)]
    (root / "attributes" / "image_attribute_labels.txt").write_text("\n".join(lines) + "\n")
    for path in IMAGES.values():
        (root / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (30, 30, 200)).save(root / "images" / path, "JPEG")
    return root


@pytest.fixture
def root(tmp_path):
    return write_cub(tmp_path)


def labels_path(root):
    return root / "attributes" / "image_attribute_labels.txt"


def edit_label_lines(root, edit):
    lines = labels_path(root).read_text().splitlines()
    labels_path(root).write_text("\n".join(edit(lines)) + "\n")


def main_error(root, out, capsys):
    """Run main in-process on a broken dataset: exit code 2 and a one-line message."""
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--root", str(root), "--out", str(out)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not out.exists()
    return lines[0]


def test_read_cub(root):
    class_names, train_images, train_labels, test_images, test_labels = prepare.read_cub(root)
    assert class_names == ATTRIBUTES
    assert train_images.tolist() == [
        "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
        "002.Laysan_Albatross/Laysan_Albatross_0081_1280.jpg",
        "003.Sooty_Albatross/Sooty_Albatross_0040_796.jpg",
        "004.Groove_billed_Ani/Groove_Billed_Ani_0078_1780.jpg",
    ]
    assert test_images.tolist() == [
        "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
        "003.Sooty_Albatross/Sooty_Albatross_0031_1066.jpg",
    ]
    assert train_labels.dtype == np.uint8
    np.testing.assert_array_equal(train_labels, [
        [1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0],
    ])
    np.testing.assert_array_equal(test_labels, [[0, 1, 1, 0, 1], [0, 0, 0, 0, 0]])


def test_attributes_file_inside_root(root):
    (root.parent / "attributes.txt").rename(root / "attributes.txt")
    assert prepare.read_cub(root)[0] == ATTRIBUTES


def check_converted(out, root):
    dataset = load_dataset(out)
    assert dataset.class_names == ATTRIBUTES
    assert dataset.image_root == (root / "images").resolve()
    assert dataset.meta["sizes"] == {"train": 4, "val": 1, "test": 2}
    assert dataset.meta["images_without_positive"] == {"train": 1, "val": 1, "test": 1}
    assert_follows_protocol(dataset, [IMAGES[i] for i in TRAIN_IDS], LABELS[np.array(TRAIN_IDS) - 1],
                            [IMAGES[i] for i in TEST_IDS], LABELS[np.array(TEST_IDS) - 1])
    # Image 6 has no attribute and is the validation row: kept, unobserved.
    assert dataset.splits["val"]["image"] == [IMAGES[6]]
    assert dataset.splits["val"]["observed"] == [[0, 0, 0, 0, 0]]


def test_convert_in_process(root, tmp_path, capsys):
    prepare.main(["--root", str(root), "--out", str(tmp_path / "out")])
    assert "cub: 5 classes; train 4, val 1, test 2" in capsys.readouterr().out
    check_converted(tmp_path / "out", root)


def test_convert_as_a_script(root, tmp_path):
    result = run_script("prepare_cub", "--root", root, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    check_converted(tmp_path / "out", root)


def test_missing_attribute_row(root, tmp_path, capsys):
    edit_label_lines(root, lambda lines: [line for line in lines if not line.startswith("4 2 ")])
    message = main_error(root, tmp_path / "out", capsys)
    assert "image_attribute_labels.txt: 34 rows, expected 7 images x 5 attributes = 35" in message
    assert message.endswith("first missing pair: (image_id 4, attribute_id 2)")


def test_extra_attribute_row(root, tmp_path, capsys):
    edit_label_lines(root, lambda lines: lines + [label_line(5, 3)])
    message = main_error(root, tmp_path / "out", capsys)
    assert "36 rows, expected 7 images x 5 attributes = 35" in message
    assert message.endswith("first duplicated pair: (image_id 5, attribute_id 3)")


def test_duplicated_pair_with_the_right_count(root, tmp_path, capsys):
    # (4, 2) is replaced by a second (3, 5): the count holds, the pairs do not.
    edit_label_lines(root, lambda lines: [label_line(3, 5) if line.startswith("4 2 ") else line for line in lines])
    message = main_error(root, tmp_path / "out", capsys)
    assert "35 rows, expected 7 images x 5 attributes = 35" in message
    assert message.endswith("first duplicated pair: (image_id 3, attribute_id 5)")


def test_short_attribute_line(root, tmp_path, capsys):
    edit_label_lines(root, lambda lines: lines[:6] + ["1 2 0 3"] + lines[7:])
    assert "image_attribute_labels.txt, line 7: 4 columns, expected at least 5" in main_error(
        root, tmp_path / "out", capsys)


def test_is_present_not_0_or_1(root, tmp_path, capsys):
    edit_label_lines(root, lambda lines: lines[:2] + ["4 3 2 1 10.0"] + lines[3:])
    assert "image_attribute_labels.txt, row 3: is_present 2 is not 0 or 1" in main_error(
        root, tmp_path / "out", capsys)


def test_missing_attributes_file(root, tmp_path, capsys):
    (root.parent / "attributes.txt").unlink()
    message = main_error(root, tmp_path / "out", capsys)
    assert message == f"error: attributes.txt not found in {root} nor in {root.resolve().parent}"


def test_image_ids_not_contiguous(root, tmp_path, capsys):
    (root / "images.txt").write_text("".join(f"{i if i != 7 else 8} {IMAGES[i]}\n" for i in IMAGES))
    assert "images.txt, line 7: id 8 is outside 1..7" in main_error(root, tmp_path / "out", capsys)


def test_attribute_id_repeated(root, tmp_path, capsys):
    (root.parent / "attributes.txt").write_text("1 a\n2 b\n2 c\n4 d\n5 e\n")
    assert "attributes.txt, line 3: id 2 appears twice" in main_error(root, tmp_path / "out", capsys)


def test_split_file_lists_fewer_images(root, tmp_path, capsys):
    (root / "train_test_split.txt").write_text("".join(f"{i} {IS_TRAINING[i]}\n" for i in range(1, 7)))
    assert "train_test_split.txt: 6 images, images.txt lists 7" in main_error(root, tmp_path / "out", capsys)


def test_missing_label_file(root, tmp_path, capsys):
    labels_path(root).unlink()
    assert "image_attribute_labels.txt: file not found" in main_error(root, tmp_path / "out", capsys)


def test_missing_image_file(root, tmp_path, capsys):
    (root / "images" / IMAGES[5]).unlink()
    message = main_error(root, tmp_path / "out", capsys)
    assert f"{IMAGES[5]}: image file not found (1 missing in all;" in message
