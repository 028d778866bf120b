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
    parser.add_argument("--missing-images", choices=("error", "drop"), default="error",
                        help="an image file listed but absent: stop (default), or drop its row and list it in "
                             "<out>/dropped_images.txt (NUS-WIDE copies usually lack some Flickr images)")
    return parser


def missing_images(image_root, images):
    return [name for name in images if not (Path(image_root) / name).is_file()]


def drop_rows(images, labels, dropped):
    keep = [index for index, name in enumerate(images) if name not in dropped]
    return [images[index] for index in keep], np.asarray(labels)[keep]


def convert(args, *, class_names, train_images, train_labels, test_images, test_labels, image_root, source):
    """Check the images, apply the protocol, write the dataset, print a one-line summary.

    Missing image files stop the conversion, or with --missing-images drop are removed
    before the protocol runs (the observation draw then covers the kept rows only) and
    listed in dropped_images.txt, their count in the metadata.
    """
    train_images, test_images = list(train_images), list(test_images)
    missing = missing_images(image_root, train_images + test_images)
    if missing and args.missing_images == "error":
        raise SPMLError(f"{Path(image_root) / missing[0]}: image file not found ({len(missing)} missing in all; "
                        "--missing-images drop removes their rows)")
    dropped = set(missing)
    train_images, train_labels = drop_rows(train_images, train_labels, dropped)
    test_images, test_labels = drop_rows(test_images, test_labels, dropped)
    splits, protocol = apply_protocol(
        train_images, train_labels, test_images, test_labels,
        num_positives=args.num_positives, observe_seed=args.observe_seed,
        split_seed=args.split_seed, val_fraction=args.val_fraction,
    )
    protocol["dropped_missing_images"] = len(missing)
    meta = write_dataset(args.out, splits, class_names, image_root=Path(image_root).resolve(),
                         source=source, protocol=protocol)
    if missing:
        (Path(args.out) / "dropped_images.txt").write_text("".join(f"{name}\n" for name in missing))
        print(f"dropped {len(missing)} rows whose image file is missing; listed in {Path(args.out) / 'dropped_images.txt'}")
    sizes = ", ".join(f"{name} {size}" for name, size in meta["sizes"].items())
    mean_positives = float(np.mean(np.asarray(train_labels).sum(1)))
    print(f"{source}: {len(class_names)} classes; {sizes}; {mean_positives:.2f} positives per official-train image; "
          f"written to {args.out}")
    return meta
