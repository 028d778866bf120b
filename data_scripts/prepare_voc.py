"""PASCAL VOC 2012 -> our dataset format (SPEC.md section 4).

    python data_scripts/prepare_voc.py --root VOCdevkit/VOC2012 --out data/voc2012

Rows: images with at least one positive, sorted by "<id>.jpg". Official train -> our
train + val, official val -> our test.
"""
import re
from pathlib import Path

import numpy as np

from ignore.data.converter_cli import convert, converter_parser
from ignore.errors import SPMLError, exit_on_error

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
PHASES = ("train", "val")


def class_files(root, phases):
    """{phase: the 20 ImageSets/Main/<cls>_<phase>.txt paths}; one error naming every missing file."""
    main_dir = Path(root) / "ImageSets" / "Main"
    if not main_dir.is_dir():
        raise SPMLError(f"{main_dir}: directory not found (--root must be the VOCdevkit/VOC2012 directory)")
    paths = {phase: [main_dir / f"{name}_{phase}.txt" for name in CLASS_NAMES] for phase in phases}
    missing = [path.name for phase in phases for path in paths[phase] if not path.is_file()]
    if missing:
        raise SPMLError(f"{main_dir}: {len(missing)} class file(s) missing: {', '.join(missing)}")
    return paths


def read_class_file(path):
    """{image id: value} of one class file, in file order; value 1, 0 (difficult) or -1."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise SPMLError(f"{path}: not a text file ({error})") from None
    values = {}
    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch(r"[+-]?[0-9]+", fields[1]):
            raise SPMLError(f"{path}:{line_number}: expected '<image id> <value>', got {line.strip()!r}")
        image_id, value = fields[0], int(fields[1])
        if value not in (1, 0, -1):
            raise SPMLError(f"{path}:{line_number}: value {value} is not -1, 0 or 1")
        if image_id in values:
            raise SPMLError(f"{path}:{line_number}: image id {image_id} is listed twice")
        values[image_id] = value
    return values


def read_voc_phase(root, phase):
    """(image paths relative to root, labels uint8 (N, 20)) of one official phase."""
    paths = class_files(root, [phase])[phase]
    per_class = [read_class_file(path) for path in paths]
    image_ids = set(per_class[0])
    for path, values in zip(paths[1:], per_class[1:]):
        if set(values) != image_ids:
            extra, absent = sorted(set(values) - image_ids), sorted(image_ids - set(values))
            raise SPMLError(
                f"{path}: lists other image ids than {paths[0].name} "
                f"({len(extra)} extra, e.g. {extra[:1]}; {len(absent)} absent, e.g. {absent[:1]})"
            )
    # The literature sorts the file names, so "<id>.jpg" (not the bare id) sets the order.
    image_ids = sorted(image_ids, key=lambda image_id: f"{image_id}.jpg")
    # Difficult (0) counts as negative, as in the literature; reshape keeps (0, 20) for empty files.
    labels = np.array([[values[image_id] == 1 for values in per_class] for image_id in image_ids],
                      dtype=np.uint8).reshape(len(image_ids), len(CLASS_NAMES))
    keep = labels.any(axis=1)
    images = [f"JPEGImages/{image_id}.jpg" for image_id, kept in zip(image_ids, keep) if kept]
    return images, labels[keep]


@exit_on_error
def main(argv=None):
    args = converter_parser("Convert PASCAL VOC 2012 to our dataset format.").parse_args(argv)
    class_files(args.root, PHASES)  # name every missing file of both phases at once
    train_images, train_labels = read_voc_phase(args.root, "train")
    test_images, test_labels = read_voc_phase(args.root, "val")
    return convert(args, class_names=list(CLASS_NAMES), train_images=train_images, train_labels=train_labels,
                   test_images=test_images, test_labels=test_labels, image_root=args.root, source="voc2012")


if __name__ == "__main__":
    main()
