"""COCO 2014 -> our dataset format (SPEC.md section 4).

    python data_scripts/prepare_coco.py --root coco --out data/coco2014

--root holds annotations/instances_{train,val}2014.json, train2014/ and val2014/.
Rows: image ids with at least one annotation, sorted as strings. Class index: position in
`categories`. Official train -> our train + val, official val -> our test.
"""
import json
from pathlib import Path

import numpy as np

from ignore.data.converter_cli import convert, converter_parser
from ignore.errors import SPMLError, exit_on_error


def instances_path(root, split):
    return Path(root) / "annotations" / f"instances_{split}2014.json"


def load_instances(path):
    """The parsed instances json, with its `categories` and `annotations` present."""
    if not path.is_file():
        raise SPMLError(f"{path}: annotation file not found")
    try:
        instances = json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise SPMLError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(instances, dict):
        raise SPMLError(f"{path}: expected a JSON object at the top level")
    for key in ("categories", "annotations"):
        if key not in instances:
            raise SPMLError(f"{path}: missing key '{key}'")
    return instances


def read_coco_split(root, split):
    """(categories [(id, name)], image paths relative to root, labels uint8 (N, C)) of one split."""
    path = instances_path(root, split)
    instances = load_instances(path)
    try:
        categories = [(category["id"], category["name"]) for category in instances["categories"]]
        class_index = {category_id: index for index, (category_id, _) in enumerate(categories)}
        if len(class_index) != len(categories):
            raise SPMLError(f"{path}: a category id is listed twice in 'categories'")
        positives = []  # (image id, class index), one per annotation
        for annotation in instances["annotations"]:
            if annotation["category_id"] not in class_index:
                raise SPMLError(f"{path}: annotation {annotation['id']} has category_id "
                                f"{annotation['category_id']}, which is not in 'categories'")
            positives.append((annotation["image_id"], class_index[annotation["category_id"]]))
    except (KeyError, TypeError) as error:
        raise SPMLError(f"{path}: malformed category or annotation ({type(error).__name__}: {error})") from None
    # The literature sorts the ids as strings, so 10 comes before 9.
    image_ids = sorted({image_id for image_id, _ in positives}, key=str)
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    labels = np.zeros((len(image_ids), len(categories)), dtype=np.uint8)
    for image_id, index in positives:
        labels[row_of[image_id], index] = 1
    images = [f"{split}2014/COCO_{split}2014_{image_id:012d}.jpg" for image_id in image_ids]
    return categories, images, labels


def check_same_categories(root, train_categories, val_categories):
    """Labels are indexed by position, so both files must list the same categories in the same order."""
    if train_categories == val_categories:
        return
    position = next((index for index, (train, val) in enumerate(zip(train_categories, val_categories))
                     if train != val), min(len(train_categories), len(val_categories)))

    def describe(categories):
        return "id {} {!r}".format(*categories[position]) if position < len(categories) else "nothing"

    raise SPMLError(
        f"{instances_path(root, 'val')}: categories differ from {instances_path(root, 'train').name}; "
        f"first at position {position}: {describe(val_categories)} here, {describe(train_categories)} in train"
    )


@exit_on_error
def main(argv=None):
    args = converter_parser("Convert COCO 2014 to our dataset format.").parse_args(argv)
    train_categories, train_images, train_labels = read_coco_split(args.root, "train")
    test_categories, test_images, test_labels = read_coco_split(args.root, "val")
    check_same_categories(args.root, train_categories, test_categories)
    class_names = [name for _, name in train_categories]
    return convert(args, class_names=class_names, train_images=train_images, train_labels=train_labels,
                   test_images=test_images, test_labels=test_labels, image_root=args.root, source="coco2014")


if __name__ == "__main__":
    main()
