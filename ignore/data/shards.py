"""Streaming shards: the train split of a dataset in our format as Parquet files that `datasets` and pyarrow read.

A shard folder holds
  train-00000-of-00008.parquet ...  one row per image: image (a `datasets.Image` value, {bytes, path}: the
                                    encoded file as it was, and its path in the dataset), labels (C) uint8,
                                    observed (C) int8, row (its row in the dataset's train split)
  shards.json                       the index: the class names, each shard's file and rows, the seed that
                                    dealt the rows, and the fingerprint of the train split they came from
The rows are dealt in a random order (a permutation drawn from the write seed) into shards of equal size (one row
apart at most), so each shard is a sample of the whole split: a split sorted by class still makes mixed batches.
The index is written last, and the folder renamed into place when whole: a killed write leaves no index.
"""
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SPMLError
from .format import label_matrix

INDEX_FILE = "shards.json"
SHARDS_FORMAT = "spml-shards"
SHARDS_VERSION = 1
# rows a Parquet row group: what a reader of one record at a time (`datasets` streaming) holds at once
ROW_GROUP_ROWS = 100
COLUMNS = ("image", "labels", "observed", "row")


def shard_name(index, count):
    """The file name of shard `index` of `count`, as the Hugging Face Hub names the files of a split."""
    return f"train-{index:05d}-of-{count:05d}.parquet"


def shard_features(num_classes):
    """The columns of a shard as `datasets` features; their Arrow schema carries them for `datasets` to read."""
    from datasets import Features, Image, Sequence, Value

    return Features({
        "image": Image(),
        "labels": Sequence(Value("uint8"), length=num_classes),
        "observed": Sequence(Value("int8"), length=num_classes),
        "row": Value("int64"),
    })


def train_fingerprint(split, num_classes):
    """sha256 of a train split's clean and observed label matrices, row by row: what ties shards to their dataset."""
    table = split.with_format("arrow", columns=["labels", "observed"])[:]
    digest = hashlib.sha256()
    for column, dtype in (("labels", np.uint8), ("observed", np.int8)):
        matrix = label_matrix(table.column(column), column, (0, 1) if column == "labels" else (-1, 0, 1),
                              num_classes, "train split row")
        digest.update(np.ascontiguousarray(matrix, dtype=dtype).tobytes())
    return digest.hexdigest()


def encoded_image(image_root, entry):
    """(the encoded bytes, the path) of a dataset's image entry: a path under image_root, or a `datasets.Image`
    value with its bytes (or, as older save_to_disk kept it, only its path)."""
    if isinstance(entry, dict) and entry.get("bytes") is not None:
        return entry["bytes"], entry.get("path")
    relative = entry["path"] if isinstance(entry, dict) else entry
    try:
        return (Path(image_root) / relative).read_bytes(), relative
    except FileNotFoundError:
        raise SPMLError(f"{Path(image_root) / relative}: image file not found") from None


def write_shards(data, out_dir, num_shards, seed=0):
    """The train split of `data` (an SPMLDataset) into `num_shards` Parquet shards and their index at out_dir.

    Images are copied as encoded, never decoded: an unreadable one is written as it is, and training meets it
    (data.bad_images). Returns the index as written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Image

    split = data.splits["train"]
    num_rows, num_classes = len(split), len(data.class_names)
    if not 1 <= num_shards <= num_rows:
        raise SPMLError(f"--shards {num_shards}: the train split has {num_rows} rows, so between 1 and {num_rows} "
                        "shards")
    if isinstance(split.features["image"], Image):
        split = split.cast_column("image", Image(decode=False))  # the stored bytes, not decoded pictures
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not (out_dir / INDEX_FILE).is_file():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise SPMLError(f"{out_dir}: exists and is not a shard folder (no {INDEX_FILE}); choose another --out")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    schema = shard_features(num_classes).arrow_schema
    rows_of_shards = np.array_split(np.random.default_rng(seed).permutation(num_rows), num_shards)
    for shard, rows in enumerate(rows_of_shards):
        with pq.ParquetWriter(partial / shard_name(shard, num_shards), schema) as writer:
            for start in range(0, len(rows), ROW_GROUP_ROWS):
                chunk = rows[start:start + ROW_GROUP_ROWS]
                records = split.with_format("arrow")[chunk.tolist()]
                images = [encoded_image(data.image_root, entry) for entry in records.column("image").to_pylist()]
                columns = {
                    "image": [{"bytes": image, "path": path} for image, path in images],
                    "labels": fixed_lists(records.column("labels"), "labels", (0, 1), num_classes, pa.uint8()),
                    "observed": fixed_lists(records.column("observed"), "observed", (-1, 0, 1), num_classes,
                                            pa.int8()),
                    "row": chunk.astype(np.int64),
                }
                writer.write_table(pa.table(columns, schema=schema), row_group_size=ROW_GROUP_ROWS)
    index = {
        "format": SHARDS_FORMAT,
        "version": SHARDS_VERSION,
        "split": "train",
        "class_names": list(data.class_names),
        "rows": num_rows,
        "seed": seed,
        "train_fingerprint": train_fingerprint(data.splits["train"], num_classes),
        "source": data.meta.get("source"),
        "shards": [{"file": shard_name(shard, num_shards), "rows": len(rows)}
                   for shard, rows in enumerate(rows_of_shards)],
    }
    (partial / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an earlier shard folder (it has an index), or an empty folder
    os.replace(partial, out_dir)
    return index


def fixed_lists(column, name, allowed, num_classes, value_type):
    """A label column (any list type) as a fixed-size list of `value_type`, checked as it goes."""
    import pyarrow as pa

    matrix = label_matrix(column, name, allowed, num_classes, "train split row")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), value_type), num_classes)


@dataclass
class ShardIndex:
    """A shard folder, opened and checked against the dataset it was written from."""

    folder: Path
    files: list
    sizes: list
    class_names: list
    fingerprint: str  # of the index file: a resumed epoch must read the same shards

    @property
    def num_rows(self):
        return sum(self.sizes)


def open_shards(folder, data):
    """The ShardIndex of `folder` (data.train_shards); an SPMLError naming the key and the file unless it holds
    the train split of `data` (an SPMLDataset): the same classes, rows and labels."""
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    where = f"data.train_shards: {folder}"
    if not index_path.is_file():
        raise SPMLError(f"{where}: no {INDEX_FILE} (write the shards with data_scripts/write_shards.py)")
    text = index_path.read_bytes()
    try:
        index = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SPMLError(f"{where}: {INDEX_FILE} is not valid JSON ({error})") from None
    if not isinstance(index, dict) or index.get("format") != SHARDS_FORMAT or index.get("version") != SHARDS_VERSION:
        raise SPMLError(f"{where}: {INDEX_FILE} is not a shard index this trainer reads "
                        f"('{SHARDS_FORMAT}' version {SHARDS_VERSION})")
    absent = [key for key in ("class_names", "rows", "train_fingerprint", "shards") if key not in index]
    if absent:
        raise SPMLError(f"{where}: {INDEX_FILE} has no '{absent[0]}'")
    split = data.splits["train"]
    if index["class_names"] != list(data.class_names) or index["rows"] != len(split) \
            or index["train_fingerprint"] != train_fingerprint(split, len(data.class_names)):
        raise SPMLError(f"{where}: written from another train split than the dataset's ({index['rows']} rows, "
                        f"{len(index['class_names'])} classes, against {len(split)} rows, {len(data.class_names)} "
                        "classes, or other labels); write the shards again from this dataset")
    files, sizes = [entry["file"] for entry in index["shards"]], [entry["rows"] for entry in index["shards"]]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise SPMLError(f"{where}: shard {missing[0]} is missing ({len(missing)} of {len(files)} in all)")
    if sum(sizes) != len(split):
        raise SPMLError(f"{where}: the shards of {INDEX_FILE} hold {sum(sizes)} rows, the train split {len(split)}")
    return ShardIndex(folder, files, sizes, index["class_names"], hashlib.sha256(text).hexdigest())


@dataclass
class ShardRecords:
    """The records of one shard, in file order: dataset rows, encoded images, label matrices."""

    rows: np.ndarray
    images: list
    labels: np.ndarray
    observed: np.ndarray


def read_shard(index, shard):
    """Shard number `shard` of `index`, checked record by record; an SPMLError names the file and record."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = index.folder / index.files[shard]
    try:
        table = pq.read_table(path, columns=list(COLUMNS))
    except (OSError, pa.ArrowException) as error:
        raise SPMLError(f"{path}: cannot read the shard ({str(error).splitlines()[0]})") from None
    if table.num_rows != index.sizes[shard]:
        raise SPMLError(f"{path}: {table.num_rows} records, {INDEX_FILE} says {index.sizes[shard]}")
    num_classes = len(index.class_names)
    labels = label_matrix(table.column("labels"), "labels", (0, 1), num_classes, f"{path} record", INDEX_FILE)
    observed = label_matrix(table.column("observed"), "observed", (-1, 0, 1), num_classes, f"{path} record",
                            INDEX_FILE)
    rows = pc.fill_null(table.column("row"), -1).to_numpy()
    outside = np.flatnonzero((rows < 0) | (rows >= index.num_rows))
    if len(outside):
        raise SPMLError(f"{path} record {outside[0]}: row {rows[outside[0]]} is not a row of the train split "
                        f"(0..{index.num_rows - 1})")
    images = pc.struct_field(table.column("image"), "bytes").to_pylist()
    without = [record for record, image in enumerate(images) if image is None]
    if without:
        raise SPMLError(f"{path} record {without[0]}: no image bytes (a shard embeds its images)")
    return ShardRecords(rows, images, labels, observed)
