"""OpenImages V6/V7 human-verified image-level labels -> our dataset format.

    python data_scripts/prepare_openimages.py --root openimages --out data/openimages
    python data_scripts/prepare_openimages.py --root openimages --out data/oi-boxable --subset boxable

--root holds the official CSVs and the images at {train,validation,test}/<ImageID>.jpg.
--subset all (default): oidv7-{train,val,test}-annotations-human-imagelabels.csv and
oidv7-class-descriptions.csv. --subset boxable: {train,validation,test}-annotations-human-
imagelabels-boxable.csv and class-descriptions-boxable.csv (or oidv7-class-descriptions-
boxable.csv), with or without their header row. --classes FILE (oidv7-classes-trainable.txt,
one MID a line) keeps those classes only; label rows of other classes are skipped and counted.

Per label row (ImageID, Source, LabelName, Confidence): Confidence 1 is a verified positive
(observed +1), 0 a verified negative (observed -1); everything unverified is unknown (0).
Official train, validation, test -> our train, val, test; no single-positive reduction
unless --single-positive (the literature's draw, a fresh RandomState per split, on the
verified positives; the verified negatives then become unknown too). `labels` holds the
verified positives and `verified` marks every verified label, present or absent: OpenImages has
no complete labels, so metrics score each class on the images that verify it only
(spml_meta.json says so under protocol.unverified_labels).
Images without a verified label among the kept classes are dropped from every split, and
training images without a verified positive too (the single-positive setting needs one);
both are counted in the summary and the metadata.
"""
import argparse
import csv
from pathlib import Path

import numpy as np

from ignore.data.converter_cli import missing_images
from ignore.data.format import SPLITS, SplitArrays, write_dataset
from ignore.data.protocol import PROTOCOL_SEED, observe_positives
from ignore.errors import SPMLError, exit_on_error

IMAGE_FOLDERS = {"train": "train", "val": "validation", "test": "test"}
LABEL_FILES = {
    "all": {split: f"oidv7-{split}-annotations-human-imagelabels.csv" for split in IMAGE_FOLDERS},
    "boxable": {split: f"{folder}-annotations-human-imagelabels-boxable.csv"
                for split, folder in IMAGE_FOLDERS.items()},
}
DESCRIPTION_FILES = {"all": ("oidv7-class-descriptions.csv",),
                     "boxable": ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv")}
DESCRIPTION_HEADER = ["LabelName", "DisplayName"]
LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
VERIFIED = {0.0: -1, 1.0: 1}  # Confidence -> observed


def open_csv(path):
    if not path.is_file():
        raise SPMLError(f"{path}: file not found")
    return path.open(newline="", encoding="utf-8-sig")  # a byte-order mark would hide the header


def read_class_descriptions(root, subset):
    """[(MID, display name)] in file order; the header row is optional (the boxable files have none)."""
    candidates = [Path(root) / name for name in DESCRIPTION_FILES[subset]]
    path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
    classes, line_of = [], {}
    with open_csv(path) as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if line == 1 and row == DESCRIPTION_HEADER:
                continue
            if len(row) != 2:
                raise SPMLError(f"{path} line {line}: expected 2 fields (LabelName,DisplayName), got {len(row)}")
            mid, name = row
            if mid in line_of:
                raise SPMLError(f"{path} line {line}: LabelName {mid} is listed again (first on line {line_of[mid]})")
            line_of[mid] = line
            classes.append((mid, name))
    if not classes:
        raise SPMLError(f"{path}: no classes")
    return path, classes


def keep_classes(classes, descriptions_path, class_list):
    """The described classes, restricted to the MIDs of `class_list` (one a line) when given, in file order."""
    if class_list is None:
        return classes
    described = {mid for mid, _ in classes}
    wanted = set()
    with open_csv(Path(class_list)) as handle:
        for line, text in enumerate(handle, start=1):
            mid = text.strip()
            if not mid:
                continue
            if mid not in described:
                raise SPMLError(f"{class_list} line {line}: {mid} is not in {descriptions_path.name}")
            wanted.add(mid)
    if not wanted:
        raise SPMLError(f"{class_list}: no classes")
    return [(mid, name) for mid, name in classes if mid in wanted]


def read_verified_labels(path, described, class_index):
    """({ImageID: {class index: +1 or -1}}, rows skipped as not in the kept classes) of one label CSV."""
    verified, first_line = {}, {}
    skipped = 0
    with open_csv(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for column in LABEL_COLUMNS:
            if column not in header:
                raise SPMLError(f"{path} line 1: missing column '{column}' (header: {','.join(header)})")
        image_at, class_at, confidence_at = (header.index(column) for column in LABEL_COLUMNS)
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise SPMLError(f"{path} line {line}: expected {len(header)} fields, got {len(row)}")
            image_id, mid, confidence = row[image_at], row[class_at], row[confidence_at]
            try:
                observed = VERIFIED[float(confidence)]
            except (ValueError, KeyError):
                raise SPMLError(f"{path} line {line}: Confidence '{confidence}' is neither 1 nor 0") from None
            if mid not in described:
                raise SPMLError(f"{path} line {line}: LabelName {mid} is not in the class descriptions")
            labels = verified.setdefault(image_id, {})  # listed, even if with other classes only
            if mid not in class_index:
                skipped += 1
                continue
            index = class_index[mid]
            if labels.get(index, observed) != observed:
                raise SPMLError(f"{path} line {line}: image {image_id}, class {mid} verified "
                                f"{'present' if observed == 1 else 'absent'} here and "
                                f"{'absent' if observed == 1 else 'present'} on line {first_line[image_id, index]}")
            if index not in labels:
                labels[index] = observed
                first_line[image_id, index] = line
    return verified, skipped


def verified_split(split, verified, num_classes):
    """(image paths, observed (N, C) int8) of one split, images sorted by id."""
    image_ids = sorted(verified)
    observed = np.zeros((len(image_ids), num_classes), dtype=np.int8)
    for row, image_id in enumerate(image_ids):
        for index, value in verified[image_id].items():
            observed[row, index] = value
    return [f"{IMAGE_FOLDERS[split]}/{image_id}.jpg" for image_id in image_ids], observed


def parser():
    parser = argparse.ArgumentParser(description="Convert OpenImages V6/V7 image-level labels to our dataset format.")
    parser.add_argument("--root", required=True, type=Path, help="the official CSVs and the image folders")
    parser.add_argument("--out", required=True, type=Path, help="where to write the dataset in our format")
    parser.add_argument("--subset", choices=("all", "boxable"), default="all",
                        help="all: the oidv7 image-level label files (default); "
                             "boxable: the 600 boxable classes' files")
    parser.add_argument("--classes", type=Path, help="keep only the MIDs of this file, one a line "
                                                     "(oidv7-classes-trainable.txt)")
    parser.add_argument("--single-positive", action="store_true",
                        help="observe --num-positives verified positives an image, everything else unknown")
    parser.add_argument("--num-positives", type=int, default=1, help="with --single-positive (default 1)")
    parser.add_argument("--observe-seed", type=int, default=PROTOCOL_SEED, help="with --single-positive (default 1200)")
    parser.add_argument("--missing-images", choices=("error", "drop"), default="error",
                        help="an image file absent: stop (default), or drop its row and list it in "
                             "<out>/dropped_images.txt")
    return parser


@exit_on_error
def main(argv=None):
    args = parser().parse_args(argv)
    descriptions_path, classes = read_class_descriptions(args.root, args.subset)
    described = {mid for mid, _ in classes}
    classes = keep_classes(classes, descriptions_path, args.classes)
    class_index = {mid: index for index, (mid, _) in enumerate(classes)}
    splits, skipped_rows, without_label = {}, {}, {}
    for split in SPLITS:
        verified, skipped_rows[split] = read_verified_labels(Path(args.root) / LABEL_FILES[args.subset][split],
                                                             described, class_index)
        without_label[split] = sum(1 for labels in verified.values() if not labels)
        images, observed = verified_split(split, {image: labels for image, labels in verified.items() if labels},
                                          len(classes))
        splits[split] = (images, observed)
    images, observed = splits["train"]
    has_positive = (observed == 1).any(axis=1)
    without_positive = int((~has_positive).sum())
    splits["train"] = ([image for image, keep in zip(images, has_positive) if keep], observed[has_positive])
    missing = missing_images(args.root, [image for images, _ in splits.values() for image in images])
    if missing and args.missing_images == "error":
        raise SPMLError(f"{Path(args.root) / missing[0]}: image file not found ({len(missing)} missing in all; "
                        "--missing-images drop removes their rows)")
    dropped = set(missing)
    arrays = {}
    for split, (images, observed) in splits.items():
        keep = np.array([image not in dropped for image in images], dtype=bool)
        images, observed = [image for image, kept in zip(images, keep) if kept], observed[keep]
        labels, verified = (observed == 1).astype(np.uint8), (observed != 0).astype(np.uint8)
        if args.single_positive:
            observed = observe_positives(labels, args.num_positives, args.observe_seed)
        arrays[split] = SplitArrays(images, labels, observed, verified)
    protocol = {
        "observation": "single_positive" if args.single_positive else "verified",
        **({"num_positives": args.num_positives, "observe_seed": args.observe_seed} if args.single_positive else {}),
        "subset": args.subset,
        "class_list": args.classes.name if args.classes else None,
        "unverified_labels": "unknown; `labels` holds the verified positives and `verified` marks the verified "
                             "labels, present or absent: metrics score each class on its verified images only",
        "skipped_rows_of_other_classes": skipped_rows,
        "dropped_without_verified_label": without_label,
        "dropped_train_without_verified_positive": without_positive,
        "dropped_missing_images": len(missing),
    }
    meta = write_dataset(args.out, arrays, [name for _, name in classes], image_root=Path(args.root).resolve(),
                         source=f"openimages-{args.subset}", protocol=protocol)
    if missing:
        (Path(args.out) / "dropped_images.txt").write_text("".join(f"{name}\n" for name in missing))
        print(f"dropped {len(missing)} rows whose image file is missing; "
              f"listed in {Path(args.out) / 'dropped_images.txt'}")
    sizes = ", ".join(f"{name} {size}" for name, size in meta["sizes"].items())
    no_label = ", ".join(f"{name} {count}" for name, count in without_label.items())
    print(f"openimages-{args.subset}: {len(classes)} classes; {sizes}; dropped {without_positive} training images "
          f"without a verified positive and images without a verified label ({no_label}); written to {args.out}")
    return meta


if __name__ == "__main__":
    main()
