"""The built-in demo datasets: multi-digit canvases made from scikit-learn's bundled digits.

Each 64x64 RGB canvas shows a few different classes of digit, each a random sample of its
digit from `sklearn.datasets.load_digits` (8x8, no download), upscaled bilinearly to a random
square, tinted, and drawn at a random position that overlaps no other digit, over dark
Gaussian noise. Train and test canvases use disjoint digit samples, so the test set measures
generalisation to unseen handwriting, not recall of the same strokes. Two layouts
(`data.demo`):

  dense   10 classes "0".."9"; 1 to 4 digits a canvas (uniform), 16..24 px: 2.5 labels an
          image, so 17% of the unannotated training labels are false negatives.
  sparse  shaped like VOC and COCO: 20 classes, each digit in red ("0r".."9r") or in blue
          ("0b".."9b"); 1, 2 or 3 a canvas (60/30/10%), 12..32 px (2% to 25% of the canvas):
          1.5 labels an image, so 2.6% of the unannotated labels are false negatives
          (VOC about 2%, COCO 2.4%).

The result is written in our format (format.py) with the literature's single-positive
protocol, and cached: `ensure_demo_dataset` builds once per (layout, seed, sizes) and reuses it.
"""
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SPMLError
from .format import META_FILE, apply_protocol, load_dataset, write_dataset
from .registry import DEMO_LAYOUTS

DEMO_VERSION = 1
SOURCE = "demo-digits"
CANVAS_SIZE = 64
BACKGROUND_MEAN, BACKGROUND_STD = 30.0, 15.0  # on 0..255
PLACEMENT_TRIES = 100  # positions tried per digit before the canvas starts again
# The split of the 1,797 digit samples into train and test pools is fixed, not seeded by
# the demo seed: every demo dataset keeps the same handwriting out of its test set.
DIGIT_SPLIT_SEED = 0
TRAIN_POOL_FRACTION = 0.8
IMAGE_ROOT = "images"
NUM_DIGITS = 10


@dataclass(frozen=True)
class Layout:
    """What a demo canvas holds. Class c is digit c % 10, tinted per channel uniformly in
    tints[c // 10] = (low RGB, high RGB)."""

    class_names: tuple
    tints: tuple
    counts: tuple  # P(1 digit), P(2 digits), ... on a canvas; None: uniform on 1..max_digits
    max_digits: int
    digit_sizes: tuple  # inclusive, px

    def draw_count(self, rng):
        if self.counts is None:
            return int(rng.integers(1, self.max_digits + 1))
        return int(rng.choice(len(self.counts), p=self.counts)) + 1


WHITE = ((0.7, 0.7, 0.7), (1.0, 1.0, 1.0))  # RGB carries a little information, digits stay bright
RED = ((0.85, 0.1, 0.1), (1.0, 0.3, 0.3))
BLUE = ((0.1, 0.3, 0.85), (0.3, 0.5, 1.0))
LAYOUTS = dict(zip(DEMO_LAYOUTS, (  # dense, sparse
    Layout(tuple(str(digit) for digit in range(NUM_DIGITS)), (WHITE,), None, 4, (16, 24)),
    Layout(tuple(f"{digit}{colour}" for colour in "rb" for digit in range(NUM_DIGITS)), (RED, BLUE),
           (0.6, 0.3, 0.1), 3, (12, 32)),
), strict=True))


def digit_pools():
    """{"train": pool, "test": pool}; a pool is a list of 10 uint8 arrays (n_digit, 8, 8), 0..255.

    The samples are split by a fixed permutation, 80% train and 20% test, so no digit
    sample appears in both.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    permutation = np.random.default_rng(DIGIT_SPLIT_SEED).permutation(len(images))
    num_train_pool = int(round(TRAIN_POOL_FRACTION * len(images)))
    pools = {}
    for phase, index in (("train", permutation[:num_train_pool]), ("test", permutation[num_train_pool:])):
        index = np.sort(index)
        pools[phase] = [images[index[digits.target[index] == digit]] for digit in range(NUM_DIGITS)]
    return pools


def boxes_intersect(box, other):
    """Whether two half-open boxes (x0, y0, x1, y1) share a pixel."""
    return box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]


def place_boxes(rng, sizes):
    """Non-intersecting square boxes of the given sizes, or None when one cannot be placed."""
    boxes = []
    for size in sizes:
        for _ in range(PLACEMENT_TRIES):
            x0, y0 = rng.integers(0, CANVAS_SIZE - size + 1, size=2)
            box = (int(x0), int(y0), int(x0) + size, int(y0) + size)
            if not any(boxes_intersect(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def draw_canvas(rng, digits_pool, layout=LAYOUTS["dense"]):
    """One canvas: (image uint8 (64, 64, 3), labels, boxes).

    labels: the classes in drawing order, all different; boxes[i] = (x0, y0, x1, y1),
    half-open pixel coordinates, of the digit of labels[i]; no two boxes intersect.
    """
    from PIL import Image

    num_digits = layout.draw_count(rng)
    labels = [int(label) for label in rng.choice(len(layout.class_names), size=num_digits, replace=False)]
    # A failed placement redraws only sizes and positions: restarting with new classes
    # would bias the label distribution towards canvases with fewer digits.
    boxes = None
    while boxes is None:
        low, high = layout.digit_sizes
        sizes = [int(size) for size in rng.integers(low, high + 1, size=num_digits)]
        boxes = place_boxes(rng, sizes)
    canvas = np.clip(rng.normal(BACKGROUND_MEAN, BACKGROUND_STD, size=(CANVAS_SIZE, CANVAS_SIZE, 3)), 0, 255)
    for label, (x0, y0, x1, y1) in zip(labels, boxes):
        samples = digits_pool[label % NUM_DIGITS]
        sample = samples[rng.integers(len(samples))]
        glyph = np.asarray(Image.fromarray(sample).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
        tint = rng.uniform(*(np.array(bound) for bound in layout.tints[label // NUM_DIGITS]), size=3)
        region = canvas[y0:y1, x0:x1]
        np.maximum(region, glyph[:, :, None] * tint, out=region)
    return np.round(canvas).astype(np.uint8), labels, boxes


def generate_canvases(seed, num_train, num_test, layout="dense"):
    """{"train": (images (N, 64, 64, 3), label matrix (N, C), boxes, labels), "test": ...} of a layout (its name);
    boxes[row][i] is the box of the digit of class labels[row][i].

    The train and test phases draw from independent child generators of
    default_rng(seed), so the test canvases do not depend on num_train.
    """
    layout, pools = LAYOUTS[layout], digit_pools()
    rngs = dict(zip(("train", "test"), np.random.default_rng(seed).spawn(2)))
    canvases = {}
    for phase, count in (("train", num_train), ("test", num_test)):
        images = np.empty((count, CANVAS_SIZE, CANVAS_SIZE, 3), dtype=np.uint8)
        label_matrix = np.zeros((count, len(layout.class_names)), dtype=np.uint8)
        all_boxes, all_labels = [], []
        for row in range(count):
            images[row], labels, boxes = draw_canvas(rngs[phase], pools[phase], layout)
            label_matrix[row, labels] = 1
            all_boxes.append(boxes)
            all_labels.append(labels)
        canvases[phase] = (images, label_matrix, all_boxes, all_labels)
    return canvases


def demo_protocol_keys(seed, num_train, num_test, layout="dense"):
    """The generator parameters stored in the protocol dict; a cached build must match them all."""
    return {"demo_version": DEMO_VERSION, "demo_layout": layout, "demo_seed": seed, "num_train": num_train,
            "num_test": num_test, "canvas_size": CANVAS_SIZE}


def canvas_path(phase, row):
    """Where canvas `row` of a phase ("train" or "test") is written, relative to the image root."""
    return f"{phase}/{row:06d}.png"


def build_demo_dataset(out_dir, seed, num_train, num_test, layout="dense"):
    """Draw the canvases, write the PNGs under out_dir/images and the dataset in our format."""
    from PIL import Image

    out_dir = Path(out_dir)
    canvases = generate_canvases(seed, num_train, num_test, layout)
    paths = {}
    for phase, (images, *_) in canvases.items():
        (out_dir / IMAGE_ROOT / phase).mkdir(parents=True, exist_ok=True)
        paths[phase] = [canvas_path(phase, row) for row in range(len(images))]
        for relative_path, image in zip(paths[phase], images):
            Image.fromarray(image).save(out_dir / IMAGE_ROOT / relative_path, format="PNG")
    splits, protocol = apply_protocol(paths["train"], canvases["train"][1], paths["test"], canvases["test"][1])
    protocol.update(demo_protocol_keys(seed, num_train, num_test, layout))
    areas = [(x1 - x0) * (y1 - y0) / CANVAS_SIZE ** 2 for boxes in canvases["train"][2] for x0, y0, x1, y1 in boxes]
    protocol["object_area"] = {"min": min(areas), "mean": float(np.mean(areas)), "max": max(areas)}  # of the canvas
    return write_dataset(out_dir, splits, list(LAYOUTS[layout].class_names), image_root=IMAGE_ROOT, source=SOURCE,
                         protocol=protocol)


def default_cache_dir(seed, num_train, num_test, layout="dense"):
    cache_root = Path(os.environ.get("SPML_CACHE", "~/.cache/spml")).expanduser()
    prefix = "demo" if layout == "dense" else f"demo-{layout}"
    return cache_root / f"{prefix}-v{DEMO_VERSION}-seed{seed}-{num_train}-{num_test}"


def read_demo_meta(path):
    """The metadata of a demo dataset at `path`, or None when it holds no demo dataset."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) and meta.get("source") == SOURCE else None


def is_current_demo(path, seed, num_train, num_test, layout="dense"):
    meta = read_demo_meta(path)
    if meta is None:
        return False
    protocol = meta.get("protocol", {})
    wanted = demo_protocol_keys(seed, num_train, num_test, layout)
    return all(protocol.get(key) == value for key, value in wanted.items())


def ensure_demo_dataset(cache_dir=None, seed=0, num_train=2500, num_test=800, layout="dense") -> Path:
    """The demo dataset's directory, built on first use and reused while the parameters match.

    layout: a name of LAYOUTS. cache_dir: where the dataset lives (default: $SPML_CACHE or
    ~/.cache/spml, then demo[-LAYOUT]-v1-seed{seed}-{num_train}-{num_test}). A demo dataset there with other parameters
    is replaced; any other non-empty directory is refused rather than deleted.
    The build happens in a temporary sibling that is renamed into place at the end, so a
    killed build never leaves a directory that looks complete.
    """
    if seed < 0:
        raise SPMLError(f"demo seed must be non-negative, got {seed}")
    if num_train < 2 or num_test < 1:
        raise SPMLError(f"the demo needs at least 2 train and 1 test canvases, got {num_train} and {num_test}")
    if layout not in LAYOUTS:
        raise SPMLError(f"demo layout '{layout}' is not one of {sorted(LAYOUTS)}")
    out_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(seed, num_train, num_test, layout)
    if is_current_demo(out_dir, seed, num_train, num_test, layout):
        return out_dir
    if out_dir.exists() and read_demo_meta(out_dir) is None and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SPMLError(f"{out_dir}: exists and is not a demo dataset; choose another directory for the demo")
    build_dir = out_dir.with_name(f"{out_dir.name}.tmp-build-{os.getpid()}")
    shutil.rmtree(build_dir, ignore_errors=True)
    build_demo_dataset(build_dir, seed, num_train, num_test, layout)
    if is_current_demo(out_dir, seed, num_train, num_test, layout):  # another process finished first
        shutil.rmtree(build_dir)
        return out_dir
    if out_dir.exists():  # a demo with other parameters, or an empty directory
        shutil.rmtree(out_dir)
    os.replace(build_dir, out_dir)
    return out_dir


def demo_statistics(path):
    """Sizes and label statistics of a dataset in our format (the demo, or any other).

    positives_unobserved: fraction of the train positives that the single-positive
    observation hides, i.e. the false negatives of "assume negative".
    unknown_positive: fraction of the unknown train labels that are in fact positive.
    """
    dataset = load_dataset(path)
    train = dataset.splits["train"].with_format("numpy")
    labels = np.asarray(train["labels"])
    observed = np.asarray(train["observed"])
    unknown = observed == 0
    return {
        "sizes": {name: len(split) for name, split in dataset.splits.items()},
        "num_classes": len(dataset.class_names),
        "labels_per_image": float(labels.sum(1).mean()),
        "positives_unobserved": float(((labels == 1) & (observed != 1)).sum() / labels.sum()),
        "unknown_positive": float(((labels == 1) & unknown).sum() / unknown.sum()),
        **({"object_area": dataset.meta["protocol"]["object_area"]} if "object_area" in dataset.meta["protocol"] else {}),
    }
