"""data_scripts/prepare_coco.py against a tiny COCO 2014 tree in the real layout."""
import json

import numpy as np
import pytest
from PIL import Image

from data_script import load_script, run_script
from ignore.data.format import load_dataset
from protocol_check import assert_follows_protocol

prepare_coco = load_script("prepare_coco")

# Non-contiguous ids, and listed out of id order: the class index is the list position.
CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "vehicle", "id": 3, "name": "car"},
    {"supercategory": "vehicle", "id": 7, "name": "train"},
    {"supercategory": "vehicle", "id": 5, "name": "airplane"},
]
# (annotation id, image id, category id)
TRAIN_ANNOTATIONS = [(101, 9, 1), (102, 9, 1), (103, 10, 7), (104, 100, 3), (105, 100, 5),
                     (106, 25, 1), (107, 25, 7), (108, 1000, 5)]
TRAIN_IMAGE_IDS = [9, 10, 3, 100, 25, 42, 1000]  # 3 and 42 have no annotation: dropped
VAL_ANNOTATIONS = [(201, 12, 3), (202, 7, 7), (203, 7, 1)]
VAL_IMAGE_IDS = [7, 8, 12]  # 8 has no annotation

CLASS_NAMES = ["person", "car", "train", "airplane"]
TRAIN_IMAGES = [f"train2014/COCO_train2014_{name}.jpg" for name in
                ("000000000010", "000000000100", "000000001000", "000000000025", "000000000009")]
TRAIN_LABELS = np.array([
    # person car train airplane
    [0, 0, 1, 0],  # 10
    [0, 1, 0, 1],  # 100
    [0, 0, 0, 1],  # 1000
    [1, 0, 1, 0],  # 25
    [1, 0, 0, 0],  # 9
], dtype=np.uint8)
TEST_IMAGES = ["val2014/COCO_val2014_000000000012.jpg", "val2014/COCO_val2014_000000000007.jpg"]
TEST_LABELS = np.array([[0, 1, 0, 0], [1, 0, 1, 0]], dtype=np.uint8)


def instances(split, image_ids, annotations):
    """An instances_<split>2014.json document with the real top-level keys."""
    return {
        "info": {"description": "tiny COCO 2014 fixture"},
        "licenses": [],
        "images": [{"id": image_id, "file_name": f"COCO_{split}2014_{image_id:012d}.jpg", "width": 8, "height": 8}
                   for image_id in image_ids],
        "annotations": [{"id": annotation_id, "image_id": image_id, "category_id": category_id,
                         "bbox": [0, 0, 4, 4], "area": 16.0, "iscrowd": 0, "segmentation": []}
                        for annotation_id, image_id, category_id in annotations],
        "categories": [dict(category) for category in CATEGORIES],
    }


def write_coco(root):
    (root / "annotations").mkdir(parents=True)
    for split, image_ids, annotations in (("train", TRAIN_IMAGE_IDS, TRAIN_ANNOTATIONS),
                                          ("val", VAL_IMAGE_IDS, VAL_ANNOTATIONS)):
        write_instances(root, split, instances(split, image_ids, annotations))
        (root / f"{split}2014").mkdir()
        for image_id in image_ids:
            image_path = root / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg"
            Image.new("RGB", (8, 8), (30, 30, 200)).save(image_path)
    return root


def write_instances(root, split, document):
    (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(document))


@pytest.fixture
def coco_root(tmp_path):
    return write_coco(tmp_path / "coco")


def test_read_coco_split_exact_rows_and_labels(coco_root):
    categories, images, labels = prepare_coco.read_coco_split(coco_root, "train")
    assert categories == [(1, "person"), (3, "car"), (7, "train"), (5, "airplane")]
    assert images == TRAIN_IMAGES
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, TRAIN_LABELS)
    _, images, labels = prepare_coco.read_coco_split(coco_root, "val")
    assert images == TEST_IMAGES
    np.testing.assert_array_equal(labels, TEST_LABELS)


def test_main_writes_the_protocol(coco_root, tmp_path, capsys):
    out = tmp_path / "coco_out"
    prepare_coco.main(["--root", str(coco_root), "--out", str(out)])
    assert "coco2014: 4 classes; train 4, val 1, test 2" in capsys.readouterr().out
    dataset = load_dataset(out)
    assert dataset.class_names == CLASS_NAMES
    assert dataset.image_root == coco_root.resolve()
    assert dataset.meta["sizes"] == {"train": 4, "val": 1, "test": 2}
    assert_follows_protocol(dataset, TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def test_script_runs_as_a_file(coco_root, tmp_path):
    result = run_script("prepare_coco", "--root", coco_root, "--out", tmp_path / "coco_out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "coco_out" / "spml_meta.json").is_file()
    (coco_root / "annotations" / "instances_train2014.json").unlink()
    result = run_script("prepare_coco", "--root", coco_root, "--out", tmp_path / "coco_out")
    assert result.returncode == 2
    expected_path = coco_root / "annotations" / "instances_train2014.json"
    assert result.stderr == f"error: {expected_path}: annotation file not found\n"


def bad_missing_json(root):
    (root / "annotations" / "instances_val2014.json").unlink()
    return "instances_val2014.json: annotation file not found"


def bad_invalid_json(root):
    (root / "annotations" / "instances_train2014.json").write_text('{"categories": [')
    return "instances_train2014.json: not valid JSON ("


def bad_missing_key(root):
    document = instances("val", VAL_IMAGE_IDS, VAL_ANNOTATIONS)
    del document["annotations"]
    write_instances(root, "val", document)
    return "instances_val2014.json: missing key 'annotations'"


def bad_category_mismatch(root):
    document = instances("val", VAL_IMAGE_IDS, VAL_ANNOTATIONS)
    document["categories"][2]["name"] = "bus"
    write_instances(root, "val", document)
    return ("instances_val2014.json: categories differ from instances_train2014.json; "
            "first at position 2: id 7 'bus' here, id 7 'train' in train")


def bad_category_missing_in_val(root):
    document = instances("val", VAL_IMAGE_IDS, VAL_ANNOTATIONS)
    del document["categories"][3]
    write_instances(root, "val", document)
    return "first at position 3: nothing here, id 5 'airplane' in train"


def bad_unknown_category(root):
    write_instances(root, "train", instances("train", TRAIN_IMAGE_IDS, TRAIN_ANNOTATIONS + [(999, 9, 2)]))
    return "instances_train2014.json: annotation 999 has category_id 2, which is not in 'categories'"


def bad_missing_image(root):
    (root / "train2014" / "COCO_train2014_000000000025.jpg").unlink()
    return "COCO_train2014_000000000025.jpg: image file not found (1 missing in all;"


@pytest.mark.parametrize("break_input", [bad_missing_json, bad_invalid_json, bad_missing_key, bad_category_mismatch,
                                         bad_category_missing_in_val, bad_unknown_category, bad_missing_image])
def test_bad_input_is_one_line_and_exit_2(coco_root, tmp_path, capsys, break_input):
    expected = break_input(coco_root)
    with pytest.raises(SystemExit) as exit_info:
        prepare_coco.main(["--root", str(coco_root), "--out", str(tmp_path / "coco_out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert expected in error
    assert not (tmp_path / "coco_out").exists()
