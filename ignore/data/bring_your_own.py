"""Bring your own HuggingFace dataset: any `save_to_disk` directory with an image column
and a multi-label column, read into the same SPMLDataset that `load_dataset` returns for
our format, so the trainer cannot tell the two apart. The images stay in the dataset's
memory-mapped Arrow files: only the label columns are made in memory.
"""
from pathlib import Path

import numpy as np

from ..errors import SPMLError
from .format import (SPLITS, SPMLDataset, SplitArrays, apply_protocol, check_split_arrays, dataset_meta,
                     refuse_empty_splits, split_features)
from .protocol import PROTOCOL_SEED, observe_positives


def load_hf_dataset(path, image_column, label_column):
    """The dataset saved at `path` as an SPMLDataset; every problem is one SPMLError."""
    from datasets import Value, disable_progress_bars

    for key, value, other in (("image", image_column, "label"), ("label", label_column, "image")):
        if not value:
            raise SPMLError(f"data.{key}_column is required with data.{other}_column")
    disable_progress_bars()
    path = Path(path).resolve()
    source = open_splits(path)
    for name, split in source.items():
        for column in (image_column, label_column):
            if column not in split.column_names:
                raise SPMLError(f"{path}: split '{name}' has no column '{column}' "
                                f"(columns: {', '.join(split.column_names)})")
    labels, class_names = label_matrices(source, label_column, path)
    splits, protocol, origin = assign_splits(labels, given_observed(source, labels, path))
    for name, split in splits.items():
        check_split_arrays(name, split, len(class_names))
    # The label columns go beside each source split's images, then the rows are selected: `select`
    # keeps the Arrow files memory-mapped (an index mapping), where building a new table would
    # read every embedded image into memory (add_column after select would copy them to disk).
    features = split_features(Value("string"), len(class_names))
    labelled = {}
    for name, split in source.items():
        images = image_table(split, image_column, f"{path}: split '{name}'")
        full_labels, full_observed = scattered({out: splits[out] for out in splits if origin[out] == name}, len(split))
        labelled[name] = (images.add_column("labels", full_labels.tolist(), feature=features["labels"])
                          .add_column("observed", full_observed.tolist(), feature=features["observed"]))
    tables = {name: labelled[origin[name]].select(split.images) for name, split in splits.items()}
    meta = dataset_meta(splits, class_names, source=f"huggingface:{path}", image_root=path, protocol=protocol)
    # Image paths start at the dataset directory; `path / "/abs"` is "/abs", so absolute ones work too.
    return SPMLDataset(tables, meta, path, path)


def open_splits(path):
    """{"train", "test", and "val" when the dataset has a "val" or "validation" split}."""
    from datasets import DatasetDict, load_from_disk

    if not path.is_dir():
        raise SPMLError(f"{path}: dataset directory not found")
    refuse_empty_splits(path)
    try:
        saved = load_from_disk(str(path))
    except FileNotFoundError:
        raise SPMLError(f"{path}: not a HuggingFace dataset written by save_to_disk") from None
    if not isinstance(saved, DatasetDict):
        raise SPMLError(f"{path}: a single Dataset without splits; a 'train' and a 'test' split are needed")
    for name in ("train", "test"):
        if name not in saved:
            raise SPMLError(f"{path}: no '{name}' split (splits: {', '.join(saved)}); a '{name}' split is needed")
    val_name = next((name for name in ("val", "validation") if name in saved), None)
    return {"train": saved["train"], "test": saved["test"], **({"val": saved[val_name]} if val_name else {})}


def label_matrices(source, column, path):
    """({split: clean 0/1 matrix}, class names) from class-index lists or multi-hot rows."""
    from datasets import ClassLabel, Value

    feature = source["train"].features[column]
    inner = getattr(feature, "feature", None)  # what a List / Sequence holds
    rows = {name: split[column] for name, split in source.items()}
    where = {name: f"{path}: split '{name}'" for name in source}
    if isinstance(inner, ClassLabel):
        return {name: multi_hot(rows[name], len(inner.names), where[name], column) for name in source}, inner.names
    if not (isinstance(inner, Value) and (inner.dtype == "bool" or "int" in inner.dtype)):
        raise SPMLError(f"{path}: column '{column}' is {feature}; expected a list of class indices "
                        "(Sequence(ClassLabel) or Sequence(Value('int64'))) or a multi-hot list of 0/1")
    # An index list never names a class twice, while a multi-hot row of 3+ classes always repeats
    # a 0 or a 1: that tells the two apart when the feature has no fixed length (from_dict never sets one).
    if (getattr(feature, "length", -1) > 0 or inner.dtype == "bool"
            or any(len(set(row)) < len(row) for split_rows in rows.values() for row in split_rows if row)):
        num_classes = len(rows["train"][0] or [])
        matrices = {name: checked_matrix(rows[name], num_classes, (0, 1), where[name], column) for name in source}
    else:
        num_classes = 1 + max((max(row) for split_rows in rows.values() for row in split_rows if row), default=-1)
        matrices = {name: multi_hot(rows[name], num_classes, where[name], column) for name in source}
    if num_classes < 1:
        raise SPMLError(f"{path}: column '{column}' names no class")
    return {name: matrix.astype(np.uint8) for name, matrix in matrices.items()}, [str(c) for c in range(num_classes)]


def multi_hot(index_lists, num_classes, where, column):
    matrix = np.zeros((len(index_lists), num_classes), dtype=np.uint8)
    for row_number, indices in enumerate(index_lists):
        for index in indices or ():
            if not 0 <= index < num_classes:
                raise SPMLError(f"{where} row {row_number}: class index {index} in column '{column}' "
                                f"is outside 0..{num_classes - 1}")
            matrix[row_number, index] = 1
    return matrix


def checked_matrix(rows, width, allowed, where, column):
    """(N, width) matrix of list rows; a row of another length or with other values is an error naming it."""
    for row_number, row in enumerate(rows):
        if row is None or len(row) != width:
            raise SPMLError(f"{where} row {row_number}: column '{column}' has {len(row or [])} values, "
                            f"the first train row has {width}")
        if not set(row) <= set(allowed):
            raise SPMLError(f"{where} row {row_number}: column '{column}' holds {sorted(set(row) - set(allowed))}, "
                            f"only {allowed} are allowed")
    return np.array(rows, dtype=np.int64).reshape(len(rows), width)


def given_observed(source, labels, path):
    """The dataset's own "observed" column as {split: matrix}, or None when it has none."""
    present = [name for name, split in source.items() if "observed" in split.column_names]
    if present and len(present) < len(source):
        raise SPMLError(f"{path}: only splits {present} have an 'observed' column; give it in every split or none")
    return {name: checked_matrix(split["observed"], labels[name].shape[1], (-1, 0, 1), f"{path}: split '{name}'",
                                 "observed") for name, split in source.items()} if present else None


def assign_splits(labels, observed):
    """({split: SplitArrays whose images are row numbers}, protocol, {split: the source split of those rows})."""
    if "val" in labels:
        # A given validation split is a phase of its own: a fresh RandomState, like train and test.
        splits = {name: SplitArrays(np.arange(len(labels[name])), labels[name], observe_positives(labels[name]))
                  for name in SPLITS}
        protocol = {"num_positives": 1, "observe_seed": PROTOCOL_SEED, "val": "dataset"}
        origin = dict(zip(SPLITS, SPLITS))
    else:
        splits, protocol = apply_protocol(np.arange(len(labels["train"])), labels["train"],
                                          np.arange(len(labels["test"])), labels["test"])
        origin = {"train": "train", "val": "train", "test": "test"}
    if observed is not None:  # the dataset's own observations replace the drawn ones
        for name, split in splits.items():
            split.observed = observed[origin[name]][np.asarray(split.images)].astype(np.int8)
        protocol = {key: value for key, value in protocol.items() if key not in ("num_positives", "observe_seed")}
        protocol["observed"] = "dataset"
    return splits, protocol, origin


def scattered(parts, num_rows):
    """The labels and observed labels of every source row, from the splits (SplitArrays) drawn from it."""
    num_classes = next(iter(parts.values())).labels.shape[1]
    labels, observed = np.zeros((num_rows, num_classes), np.uint8), np.zeros((num_rows, num_classes), np.int8)
    for split in parts.values():
        labels[split.images], observed[split.images] = split.labels, split.observed
    return labels, observed


def image_table(split, column, where):
    """The split's image column alone, named "image", as `open_rgb` reads it; still memory-mapped."""
    import pyarrow.compute as pc
    from datasets import Image, Value

    feature = split.features[column]
    images = split.select_columns([column])
    if column != "image":
        images = images.rename_column(column, "image")
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return images
    if not isinstance(feature, Image):
        raise SPMLError(f"{where}: column '{column}' is {feature}; expected an Image or a string path column")
    images = images.cast_column("image", Image(decode=False))  # the stored bytes, decoded per item by open_rgb
    stored = images.data.column("image")
    # validity bitmaps only: no image is read
    without_bytes = sum(pc.struct_field(chunk, "bytes").null_count for chunk in stored.chunks)
    without_path = sum(pc.struct_field(chunk, "path").null_count for chunk in stored.chunks)
    if without_bytes and (without_bytes < len(images) or without_path):  # older save_to_disk kept only the path
        raise SPMLError(f"{where}: column '{column}' mixes embedded images and file paths")
    return images
