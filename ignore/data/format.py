"""The one on-disk dataset format the trainer reads.

A directory written by `datasets.DatasetDict.save_to_disk` with splits train, val and
test, plus `spml_meta.json` beside `dataset_dict.json`. Per row:
  image     path of the image file relative to the image root, or (for datasets that embed
            their pictures) a `datasets.Image` feature holding the encoded bytes;
  labels    the clean multi-hot vector (C,) in {0, 1}: metrics and diagnostics only;
  observed  the observed vector (C,) in {-1, 0, 1}: 1 observed positive, 0 unknown,
            -1 observed negative. The only labels a loss may read.
  verified  only where `labels` is not complete (the metadata's protocol has
            `unverified_labels`, as OpenImages' has): (C,) in {0, 1}, 1 where the clean label
            is known, present or absent. Metrics score each class on these entries only.
The metadata holds the class names, the source format, the protocol and its seeds, the
image root and the format version.
"""
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SPMLError
from .protocol import PROTOCOL_SEED, observe_positives, split_train_val

FORMAT_VERSION = 1
META_FILE = "spml_meta.json"
SPLITS = ("train", "val", "test")
INCOMPLETE_LABELS = "unverified_labels"  # the protocol key of a dataset whose splits carry `verified`


@dataclass
class SplitArrays:
    """One split before it is written: image paths, clean labels, observed labels, and where the clean labels
    are incomplete, which of them are known (verified)."""

    images: list
    labels: np.ndarray
    observed: np.ndarray
    verified: np.ndarray = None


def apply_protocol(train_images, train_labels, test_images, test_labels, *,
                   num_positives=1, observe_seed=PROTOCOL_SEED, split_seed=PROTOCOL_SEED,
                   val_fraction=0.2):
    """Official train/test sets -> our train/val/test with single-positive observations.

    Observations are drawn per phase with a fresh RandomState (official train, then
    official test), then the official train set is split into train and val.
    Returns ({split: SplitArrays}, protocol dict for the metadata).
    """
    train_labels = np.asarray(train_labels, dtype=np.uint8)
    test_labels = np.asarray(test_labels, dtype=np.uint8)
    train_observed = observe_positives(train_labels, num_positives, observe_seed)
    test_observed = observe_positives(test_labels, num_positives, observe_seed)
    train_index, val_index = split_train_val(len(train_images), val_fraction, split_seed)

    def take(index):
        return SplitArrays([train_images[i] for i in index], train_labels[index], train_observed[index])

    splits = {
        "train": take(train_index),
        "val": take(val_index),
        "test": SplitArrays(list(test_images), test_labels, test_observed),
    }
    protocol = {
        "num_positives": num_positives,
        "observe_seed": observe_seed,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
    }
    return splits, protocol


def write_dataset(out_dir, splits, class_names, *, image_root, source, protocol):
    """Write `splits` ({name: SplitArrays}) in our format to `out_dir`, atomically.

    image_root: where the relative image paths start; stored as given, a relative root is
    resolved against `out_dir` when the dataset is read.
    Written to a temporary sibling and renamed, so a killed run never leaves half a dataset.
    Files already inside `out_dir` that are not part of a dataset (an images/ folder) stay.
    """
    from datasets import Dataset, DatasetDict, Value, disable_progress_bars

    disable_progress_bars()
    out_dir = Path(out_dir).resolve()
    num_classes = len(class_names)
    incomplete = INCOMPLETE_LABELS in protocol
    features = split_features(Value("string"), num_classes, incomplete)
    tables = {}
    for name in SPLITS:
        split = splits[name]
        check_split_arrays(name, split, num_classes)
        if incomplete and split.verified is None:
            raise SPMLError(f"split '{name}': protocol['{INCOMPLETE_LABELS}'] says the labels are incomplete, "
                            "but the split has no verified mask")
        if split.verified is not None and not incomplete:
            raise SPMLError(f"split '{name}': a verified mask without protocol['{INCOMPLETE_LABELS}']")
        columns = {"image": list(split.images), "labels": split.labels.tolist(), "observed": split.observed.tolist()}
        if incomplete:
            columns["verified"] = split.verified.tolist()
        tables[name] = Dataset.from_dict(columns, features=features)
    meta = dataset_meta(splits, class_names, source=source, image_root=image_root, protocol=protocol)
    if out_dir.exists() and not out_dir.is_dir():
        raise SPMLError(f"{out_dir}: exists and is not a directory")
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp-write")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    DatasetDict(tables).save_to_disk(str(tmp_dir))
    (tmp_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The metadata goes first and comes back last: a write killed in between leaves a
    # directory that load_dataset refuses, never a mix of old and new splits that looks whole.
    (out_dir / META_FILE).unlink(missing_ok=True)
    for name in list(SPLITS) + ["dataset_dict.json", META_FILE]:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp_dir / name, target)
    shutil.rmtree(tmp_dir)
    return meta


def split_features(image_feature, num_classes, incomplete=False):
    """The columns of every split: the image, then clean and observed label vectors, and the verified mask
    when the clean labels are `incomplete`."""
    from datasets import Features, Sequence, Value

    return Features({
        "image": image_feature,
        "labels": Sequence(Value("uint8"), length=num_classes),
        "observed": Sequence(Value("int8"), length=num_classes),
        **({"verified": Sequence(Value("uint8"), length=num_classes)} if incomplete else {}),
    })


def dataset_meta(splits, class_names, *, source, image_root, protocol):
    """The dataset-level metadata of `splits` ({name: SplitArrays}), as spml_meta.json holds it."""
    return {
        "format": "spml",
        "version": FORMAT_VERSION,
        "class_names": list(class_names),
        "source": source,
        "image_root": str(image_root),
        "protocol": protocol,
        "sizes": {name: len(splits[name].images) for name in SPLITS},
        "images_without_positive": {name: int((splits[name].labels.sum(1) == 0).sum()) for name in SPLITS},
    }


def check_split_arrays(name, split, num_classes):
    """Shapes and values of one split before writing; raises SPMLError naming the split."""
    if len(split.images) == 0:
        raise SPMLError(f"split '{name}' is empty")
    matrices = [("labels", split.labels), ("observed", split.observed)]
    if split.verified is not None:
        matrices.append(("verified", split.verified))
    for what, matrix in matrices:
        if matrix.shape != (len(split.images), num_classes):
            raise SPMLError(
                f"split '{name}': {what} has shape {matrix.shape}, expected ({len(split.images)}, {num_classes})"
            )
    if not np.isin(split.labels, (0, 1)).all():
        raise SPMLError(f"split '{name}': labels must be 0 or 1")
    if not np.isin(split.observed, (-1, 0, 1)).all():
        raise SPMLError(f"split '{name}': observed labels must be -1, 0 or 1")
    if split.verified is not None:
        if not np.isin(split.verified, (0, 1)).all():
            raise SPMLError(f"split '{name}': verified must be 0 or 1")
        check_positives_verified(split.labels, split.verified, f"split '{name}'")


@dataclass
class SPMLDataset:
    """A dataset in our format, loaded: the HF splits, the metadata, the resolved image root."""

    splits: dict
    meta: dict
    image_root: Path
    folder: Path = None  # where the dataset lives (a teacher's scores are cached there)
    train_shards: object = None  # shards.ShardIndex when the train split is streamed (data.train_shards)

    @property
    def class_names(self):
        return self.meta["class_names"]


def load_dataset(path, image_root=None):
    """Read a dataset in our format; every problem is one SPMLError naming the file."""
    from datasets import load_from_disk

    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise SPMLError(f"{path}: dataset directory not found")
    if not meta_path.is_file() or not (path / "dataset_dict.json").is_file():
        raise SPMLError(
            f"{path}: not a dataset in our format (needs {META_FILE} and dataset_dict.json; "
            "convert it with a script in data_scripts/)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise SPMLError(f"{meta_path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise SPMLError(f"{meta_path}: expected a JSON object, got a {type(meta).__name__}")
    if meta.get("format") != "spml" or meta.get("version") != FORMAT_VERSION:
        raise SPMLError(
            f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"this trainer reads 'spml' version {FORMAT_VERSION}"
        )
    for key in ("class_names", "image_root", "source", "protocol"):
        if key not in meta:
            raise SPMLError(f"{meta_path}: missing key '{key}'")
    refuse_empty_splits(path)
    dataset_dict = load_from_disk(str(path))
    num_classes = len(meta["class_names"])
    incomplete = isinstance(meta["protocol"], dict) and INCOMPLETE_LABELS in meta["protocol"]
    splits = {}
    for name in SPLITS:
        if name not in dataset_dict:
            raise SPMLError(f"{path}: split '{name}' is missing")
        split = dataset_dict[name]
        if len(split) == 0:
            raise SPMLError(f"{path}: split '{name}' is empty")
        for column in ("image", "labels", "observed"):
            if column not in split.column_names:
                raise SPMLError(f"{path}: split '{name}' has no column '{column}'")
        check_verified_column(split, incomplete, path, name)
        where = f"{path}: split '{name}'"
        labels = check_label_column(split, "labels", (0, 1), num_classes, where)
        check_label_column(split, "observed", (-1, 0, 1), num_classes, where)
        if incomplete:
            check_positives_verified(labels, check_label_column(split, "verified", (0, 1), num_classes, where), where)
        splits[name] = split
    root = Path(image_root if image_root is not None else meta["image_root"])
    if not root.is_absolute():
        root = path / root
    return SPMLDataset(splits, meta, root, path.resolve())


def refuse_empty_splits(path):
    """A split saved without rows makes `load_from_disk` fail with an IndexError: name it instead."""
    index = path / "dataset_dict.json"
    if not index.is_file():
        return  # a single Dataset, not split
    for name in json.loads(index.read_text()).get("splits", []):
        state = path / name / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("_data_files") == []:
            raise SPMLError(f"{path}: split '{name}' is empty")


def check_verified_column(split, incomplete, path, name):
    """A `verified` column where the metadata says the labels are incomplete, and only there."""
    if incomplete and "verified" not in split.column_names:
        raise SPMLError(f"{path}: split '{name}' has no column 'verified', which {META_FILE} promises "
                        f"(protocol.{INCOMPLETE_LABELS}); convert the dataset again")
    if not incomplete and "verified" in split.column_names:
        raise SPMLError(f"{path}: split '{name}' has a column 'verified', but {META_FILE} has no "
                        f"protocol.{INCOMPLETE_LABELS} saying its labels are incomplete")


def check_positives_verified(labels, verified, where):
    """A positive label is a verified one: else an SPMLError naming the first row and class that is not."""
    unverified_positive = np.argwhere((labels == 1) & (verified == 0))
    if len(unverified_positive):
        row, column = unverified_positive[0]
        raise SPMLError(f"{where} row {row}: class {column} is labelled present but not verified (column "
                        "'verified' holds 0)")


def check_label_column(split, column, allowed, num_classes, where):
    """Every row of a label column has num_classes values, all in `allowed`, else an SPMLError naming the row;
    the column as an (N, num_classes) matrix.

    Read through Arrow, without a Python list per row: COCO's train split is 65k rows of 80.
    """
    return label_matrix(split.data.column(column), column, allowed, num_classes, f"{where} row")


def label_matrix(rows, column, allowed, num_classes, where, names=META_FILE):
    """The (N, num_classes) numpy matrix of an Arrow list column `rows`; a row of another length or with a value
    outside `allowed` is an SPMLError "<where> <number>: ..." (`where` ends with what a row is called, `names` is
    the file that names the classes)."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(rows), 0).to_numpy()
    wrong_length = np.flatnonzero(lengths != num_classes)
    if len(wrong_length):
        row = wrong_length[0]
        raise SPMLError(f"{where} {row}: column '{column}' has {lengths[row]} values, "
                        f"{names} names {num_classes} classes")
    matrix = pc.list_flatten(rows).to_numpy(zero_copy_only=False).reshape(len(lengths), num_classes)
    wrong_value = np.flatnonzero(~np.isin(matrix, allowed).all(axis=1))
    if len(wrong_value):
        row = wrong_value[0]
        values = sorted(set(matrix[row][~np.isin(matrix[row], allowed)].tolist()))
        raise SPMLError(f"{where} {row}: column '{column}' holds {values}, only {allowed} are allowed")
    return matrix
