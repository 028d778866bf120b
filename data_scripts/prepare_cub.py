"""CUB-200-2011 attributes (312 classes) -> our dataset format.

--root is the CUB_200_2011 directory: images.txt, train_test_split.txt, images/ and
attributes/image_attribute_labels.txt; attributes.txt sits next to CUB_200_2011/ in the
release (accepted in --root too). Labels are the is_present column. Rows are in image_id
order within each phase; official train (is_training 1) -> our train+val, the rest -> test.

    python data_scripts/prepare_cub.py --root /data/CUB_200_2011 --out data/cub
"""
import warnings

import numpy as np

from ignore.data.converter_cli import convert, converter_parser
from ignore.errors import SPMLError, exit_on_error

# certainty_id and time are not used, only required to be there: one byte of each is kept.
LABEL_COLUMNS = [("image_id", np.int64), ("attribute_id", np.int64), ("is_present", np.int64),
                 ("certainty_id", "S1"), ("time", "S1")]


def read_id_table(path):
    """`<id> <value>` lines -> values as a list in id order; ids must be 1..N, each once."""
    if not path.is_file():
        raise SPMLError(f"{path}: file not found")
    lines = [(n, line.split(maxsplit=1)) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise SPMLError(f"{path}: no rows")
    values = [None] * len(lines)
    for line_number, tokens in lines:
        if len(tokens) != 2 or not tokens[0].isdigit():
            raise SPMLError(f"{path}, line {line_number}: expected '<id> <value>'")
        index = int(tokens[0]) - 1
        if not 0 <= index < len(lines):
            raise SPMLError(f"{path}, line {line_number}: id {index + 1} is outside 1..{len(lines)}")
        if values[index] is not None:
            raise SPMLError(f"{path}, line {line_number}: id {index + 1} appears twice")
        values[index] = tokens[1].strip()
    return values


def find_attributes_file(root):
    """attributes.txt: the release puts it beside CUB_200_2011/, some copies inside it."""
    candidates = [root / "attributes.txt", root.resolve().parent / "attributes.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise SPMLError(f"attributes.txt not found in {candidates[0].parent} nor in {candidates[1].parent}")


def read_attribute_labels(path, num_images, num_attributes):
    """is_present of every (image, attribute) pair -> (num_images, num_attributes) uint8.

    The file has 3.7M lines, so numpy parses it in one pass; a few real lines carry extra
    tokens, hence only the first five columns are read. The slow line-by-line reading only
    runs to say which line is broken.
    """
    if not path.is_file():
        raise SPMLError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: the count check below says so
            rows = np.loadtxt(path, dtype=LABEL_COLUMNS, usecols=range(5), comments=None, ndmin=1)
    except ValueError as error:
        raise_first_bad_line(path)
        raise SPMLError(f"{path}: {error}") from None
    image_ids, attribute_ids, present = rows["image_id"], rows["attribute_id"], rows["is_present"]
    for name, ids, count in (("image_id", image_ids, num_images), ("attribute_id", attribute_ids, num_attributes)):
        outside = np.flatnonzero((ids < 1) | (ids > count))
        if len(outside):
            raise SPMLError(f"{path}, row {outside[0] + 1}: {name} {ids[outside[0]]} is outside 1..{count}")
    not_binary = np.flatnonzero((present != 0) & (present != 1))
    if len(not_binary):
        raise SPMLError(f"{path}, row {not_binary[0] + 1}: is_present {present[not_binary[0]]} is not 0 or 1")
    pair_index = (image_ids - 1) * num_attributes + (attribute_ids - 1)
    pair_counts = np.bincount(pair_index, minlength=num_images * num_attributes)
    if len(rows) != num_images * num_attributes or (pair_counts != 1).any():
        first_bad = np.flatnonzero(pair_counts != 1)[0]
        problem = "duplicated" if pair_counts[first_bad] > 1 else "missing"
        image_id, attribute_id = divmod(int(first_bad), num_attributes)
        raise SPMLError(
            f"{path}: {len(rows)} rows, expected {num_images} images x {num_attributes} attributes = "
            f"{num_images * num_attributes}, one per pair; first {problem} pair: "
            f"(image_id {image_id + 1}, attribute_id {attribute_id + 1})"
        )
    labels = np.zeros(num_images * num_attributes, dtype=np.uint8)
    labels[pair_index] = present
    return labels.reshape(num_images, num_attributes)


def raise_first_bad_line(path):
    """Name the first line that is not `<image_id> <attribute_id> <is_present> <certainty_id> <time>`."""
    with open(path) as lines:
        for line_number, line in enumerate(lines, 1):
            tokens = line.split()
            if tokens and len(tokens) < 5:
                raise SPMLError(f"{path}, line {line_number}: {len(tokens)} columns, expected at least 5")
            if tokens and not all(token.isdigit() for token in tokens[:3]):
                raise SPMLError(f"{path}, line {line_number}: the first three columns must be integers")


def read_cub(root):
    """(attribute names, train paths, train labels, test paths, test labels); paths under images/."""
    image_paths = np.array(read_id_table(root / "images.txt"))
    split_path = root / "train_test_split.txt"
    is_training = np.array(read_id_table(split_path))
    if len(is_training) != len(image_paths):
        raise SPMLError(f"{split_path}: {len(is_training)} images, images.txt lists {len(image_paths)}")
    if not np.isin(is_training, ("0", "1")).all():
        bad_id = np.flatnonzero(~np.isin(is_training, ("0", "1")))[0] + 1
        raise SPMLError(f"{split_path}: is_training of image_id {bad_id} is not 0 or 1")
    attribute_names = read_id_table(find_attributes_file(root))
    labels = read_attribute_labels(root / "attributes" / "image_attribute_labels.txt",
                                   len(image_paths), len(attribute_names))
    train = is_training == "1"
    return attribute_names, image_paths[train], labels[train], image_paths[~train], labels[~train]


@exit_on_error
def main(argv=None):
    args = converter_parser("Convert CUB-200-2011 attributes (312 classes) to our dataset format.").parse_args(argv)
    class_names, train_images, train_labels, test_images, test_labels = read_cub(args.root)
    return convert(args, class_names=class_names, train_images=train_images.tolist(), train_labels=train_labels,
                   test_images=test_images.tolist(), test_labels=test_labels,
                   image_root=args.root / "images", source="cub")


if __name__ == "__main__":
    main()
