"""Predict the labels of images with an exported model.

    python -m ignore.predict --model runs/demo/export photos/ a.jpg [--threshold 0.5] [--top-k 3]
                             [--out preds.csv | preds.jsonl] [--batch-size 64] [--num-workers 2]

A class is predicted at or above its own decision threshold, chosen on the validation split when the
model was trained and stored in the export; --threshold sets one probability for every class instead.

Folders are searched recursively for files with an image extension PIL knows; a file named on
the command line is always tried. One process, on Accelerate's device (a GPU when there is one). An
unreadable image is named on stderr and counted, the rest are predicted (exit 0); when none
could be read, the exit code is 2. Without --out, one line per image goes to stdout.
"""
import argparse
import csv
import io
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .data.images import open_rgb
from .errors import SPMLError, exit_on_error, require_at_least
from .files import require_writable_file, write_text_atomic
from .inference import labels_at, load_export, preprocessing

IMAGE_EXTENSIONS = frozenset(extension.lower() for extension in Image.registered_extensions())


def image_files(inputs):
    """The files named, and the image files under the folders named (sorted), in the order given."""
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise SPMLError(f"{path}: no image files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SPMLError(f"{path}: no such file or folder")
    return files


class ImageFiles(Dataset):
    """Each file as (index, image tensor), or (index, the reason it could not be read)."""

    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        try:
            return index, self.transform(open_rgb(Path(), self.files[index]))
        except SPMLError as error:
            return index, str(error)


def collate(items):
    """(indices read, their images stacked or None, [(index, reason) of the unreadable ones])."""
    read = [(index, image) for index, image in items if not isinstance(image, str)]
    unreadable = [(index, image) for index, image in items if isinstance(image, str)]
    images = torch.stack([image for _, image in read]) if read else None
    return [index for index, _ in read], images, unreadable


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export folder (runs/NAME/export) or a Hub repository")
    parser.add_argument("inputs", nargs="*", metavar="IMAGES_OR_FOLDERS")
    parser.add_argument("--threshold", type=float, help="predict every class at this probability or above (default: "
                        "each class's threshold stored in the export; 0.5 for an export without them)")
    parser.add_argument("--top-k", type=int, default=0, help="predict at most K classes per image, most probable first")
    parser.add_argument("--out", help="write the predictions to a .csv or .jsonl file instead of stdout")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader processes decoding the images")
    args = parser.parse_args(argv)
    if not args.inputs:
        raise SPMLError("no images given: name image files or folders after --model")
    if args.out and Path(args.out).suffix not in (".csv", ".jsonl"):
        raise SPMLError(f"--out {args.out}: the file name must end in .csv or .jsonl")
    if args.out:
        require_writable_file(args.out, "--out")
    require_at_least(args, {"--batch-size": 1, "--top-k": 0, "--num-workers": 0})
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise SPMLError(f"--threshold must be within [0, 1], got {args.threshold}")
    return args


def predicted(probabilities, class_names, thresholds, top_k):
    """[(class, probability)] at or above each class's threshold, most probable first, at most top_k (0: all)."""
    kept = labels_at(probabilities, class_names, thresholds)
    return kept[:top_k] if top_k else kept


def thresholds_of(model, threshold):
    """--threshold for every class, else the export's own; an export without them is said to fall back to 0.5."""
    if threshold is not None:
        return [threshold] * len(model.class_names)
    if "decision_thresholds" not in model.export_info:
        print("this export stores no decision thresholds (trained by an earlier version): 0.5 for every class",
              file=sys.stderr)
    return model.thresholds


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    files = image_files(args.inputs)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = load_export(args.model, accelerator.device)
    loader = DataLoader(ImageFiles(files, preprocessing(model)), batch_size=args.batch_size,
                        num_workers=args.num_workers, collate_fn=collate)
    probabilities, unreadable = {}, []
    with torch.no_grad(), tqdm(total=len(files), desc="predict", file=sys.stderr) as bar:
        for indices, images, failures in loader:
            for index, reason in failures:
                unreadable.append(reason)
                tqdm.write(f"unreadable: {reason}", file=sys.stderr)
            if images is not None:
                with accelerator.autocast():
                    logits = model(images.to(accelerator.device))["logits"]
                for index, row in zip(indices, torch.sigmoid(logits.double()).cpu().tolist()):
                    probabilities[index] = row
            bar.update(len(indices) + len(failures))
    if not probabilities:
        raise SPMLError(f"none of the {len(files)} images could be read (named above)")
    rows = [(str(files[index]), probabilities[index]) for index in sorted(probabilities)]
    write_predictions(rows, model.class_names, thresholds_of(model, args.threshold), args.top_k, args.out)
    print(f"{len(rows)} images predicted, {len(unreadable)} unreadable" + (" (named above)" if unreadable else ""),
          file=sys.stderr)


def write_predictions(rows, class_names, thresholds, top_k, out):
    """stdout lines, a CSV (path, predicted, one probability column per class) or JSON lines."""
    if not out:
        for path, row in rows:
            labels = predicted(row, class_names, thresholds, top_k)
            print(f"{path}: " + (", ".join(f"{name} {probability:.3f}" for name, probability in labels) or "-"))
        return
    text = io.StringIO()
    if out.endswith(".csv"):
        writer = csv.writer(text)
        writer.writerow(["path", "predicted", *class_names])
        for path, row in rows:
            labels = predicted(row, class_names, thresholds, top_k)
            writer.writerow([path, ";".join(name for name, _ in labels), *(f"{value:.8g}" for value in row)])
    else:
        for path, row in rows:
            labels = predicted(row, class_names, thresholds, top_k)
            text.write(json.dumps({"path": path, "predicted": [name for name, _ in labels],
                                   "probabilities": dict(zip(class_names, row))}) + "\n")
    write_text_atomic(out, text.getvalue())


if __name__ == "__main__":
    main()
