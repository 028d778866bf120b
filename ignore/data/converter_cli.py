"""What every converter in data_scripts/ shares: its options, the protocol and the write."""
import argparse
from pathlib import Path

import numpy as np

from ..errors import SPMLError
from .format import apply_protocol, write_dataset
from .protocol import PROTOCOL_SEED


def converter_parser(description):
    """An argument parser with the options common to all converters."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", required=True, type=Path, help="the dataset's own directory, as downloaded")
    parser.add_argument("--out", required=True, type=Path, help="where to write the dataset in our format")
    parser.add_argument("--num-positives", type=int, default=1, help="observed positives per image (default 1)")
    parser.add_argument("--observe-seed", type=int, default=PROTOCOL_SEED, help="seed of the observation draw")
    parser.add_argument("--split-seed", type=int, default=PROTOCOL_SEED, help="seed of the train/val split")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="fraction of official train kept for val")
    return parser


def check_images_exist(image_root, images):
    """Raise SPMLError naming the first missing image file and how many are missing."""
    missing = [name for name in images if not (Path(image_root) / name).is_file()]
    if missing:
        raise SPMLError(f"{Path(image_root) / missing[0]}: image file not found ({len(missing)} missing in all)")


def convert(args, *, class_names, train_images, train_labels, test_images, test_labels, image_root, source):
    """Check the images, apply the protocol, write the dataset, print a one-line summary."""
    check_images_exist(image_root, list(train_images) + list(test_images))
    splits, protocol = apply_protocol(
        train_images, train_labels, test_images, test_labels,
        num_positives=args.num_positives, observe_seed=args.observe_seed,
        split_seed=args.split_seed, val_fraction=args.val_fraction,
    )
    meta = write_dataset(args.out, splits, class_names, image_root=Path(image_root).resolve(),
                         source=source, protocol=protocol)
    sizes = ", ".join(f"{name} {size}" for name, size in meta["sizes"].items())
    mean_positives = float(np.mean(np.asarray(train_labels).sum(1)))
    print(f"{source}: {len(class_names)} classes; {sizes}; {mean_positives:.2f} positives per official-train image; "
          f"written to {args.out}")
    return meta
