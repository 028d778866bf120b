"""NUS-WIDE (81 concepts) -> our dataset format.

--root holds Concepts81.txt (the class order), ImageList/{Train,Test}Imagelist.txt,
Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt (one 0/1 per image, in image
list order) and the images under Flickr/. Rows keep the image-list order. Official Train
-> our train+val, official Test -> our test. Images without any label (about a fifth) are
kept, as rows that stay unobserved; the metadata counts them (images_without_positive).

    python data_scripts/prepare_nuswide.py --root /data/NUS-WIDE --out data/nuswide
"""
import numpy as np

from ignore.data.converter_cli import convert, converter_parser
from ignore.errors import SPMLError, exit_on_error

PHASES = ("Train", "Test")
LISTED_MISSING = 5


def read_lines(path):
    """Stripped lines of a text file; trailing blank lines dropped (files often end in one)."""
    if not path.is_file():
        raise SPMLError(f"{path}: file not found")
    return [line.strip() for line in path.read_text().rstrip().splitlines()]


def read_concepts(root):
    """Concept names in Concepts81.txt order: the class order."""
    path = root / "Concepts81.txt"
    concepts = read_lines(path)
    if not concepts:
        raise SPMLError(f"{path}: no concepts")
    first_line = {}
    for line_number, concept in enumerate(concepts, 1):
        if not concept:
            raise SPMLError(f"{path}, line {line_number}: empty concept name")
        if concept in first_line:
            raise SPMLError(f"{path}, line {line_number}: concept '{concept}' repeats line {first_line[concept]}")
        first_line[concept] = line_number
    return concepts


def phase_files(root, concepts, phase):
    """[image list, label file of each concept] of one official phase."""
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    return [root / "ImageList" / f"{phase}Imagelist.txt"] + [labels_dir / f"Labels_{c}_{phase}.txt" for c in concepts]


def require_files(root, paths):
    """One error naming every missing file (the first few, and how many)."""
    missing = [str(path.relative_to(root)) for path in paths if not path.is_file()]
    if missing:
        more = f" and {len(missing) - LISTED_MISSING} more" if len(missing) > LISTED_MISSING else ""
        raise SPMLError(f"{root}: missing {', '.join(missing[:LISTED_MISSING])}{more}")


def read_label_column(path, num_images, image_list):
    """One concept's 0/1 column; its row count must be that of the image list."""
    values = read_lines(path)
    if len(values) != num_images:
        raise SPMLError(f"{path}: {len(values)} rows, but {image_list} lists {num_images} images")
    if not set(values) <= {"0", "1"}:
        line_number = next(n for n, value in enumerate(values, 1) if value not in ("0", "1"))
        raise SPMLError(f"{path}, line {line_number}: {values[line_number - 1]!r} is not 0 or 1")
    return np.array(values) == "1"


def read_nuswide_phase(root, concepts, phase):
    """(image paths relative to Flickr/, labels (N, C) uint8) of phase 'Train' or 'Test'."""
    files = phase_files(root, concepts, phase)
    require_files(root, files)
    image_list, *label_files = files
    # The lists are written with Windows separators: actor\0001_2124494179.jpg
    image_paths = np.array([line.replace("\\", "/") for line in read_lines(image_list)])
    if len(image_paths) == 0:
        raise SPMLError(f"{image_list}: no images listed")
    if (image_paths == "").any():
        raise SPMLError(f"{image_list}, line {np.argmax(image_paths == '') + 1}: empty image path")
    labels = np.zeros((len(image_paths), len(concepts)), dtype=np.uint8)
    for column, path in enumerate(label_files):
        labels[:, column] = read_label_column(path, len(image_paths), image_list)
    return image_paths, labels


@exit_on_error
def main(argv=None):
    args = converter_parser("Convert NUS-WIDE (81 concepts) to our dataset format.").parse_args(argv)
    concepts = read_concepts(args.root)
    # Every missing file of both phases in one message, before any reading.
    require_files(args.root, [path for phase in PHASES for path in phase_files(args.root, concepts, phase)])
    train_images, train_labels = read_nuswide_phase(args.root, concepts, "Train")
    test_images, test_labels = read_nuswide_phase(args.root, concepts, "Test")
    return convert(args, class_names=concepts, train_images=train_images.tolist(), train_labels=train_labels,
                   test_images=test_images.tolist(), test_labels=test_labels,
                   image_root=args.root / "Flickr", source="nuswide")


if __name__ == "__main__":
    main()
