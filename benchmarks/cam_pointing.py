"""Benchmark: do a finished run's class activation maps point at the objects? On the built-in demo only.

    python benchmarks/cam_pointing.py RUN_DIR [RUN_DIR ...] [--batch-size 64]

Each RUN_DIR is a finished `ignore-train` run on a built-in demo dataset (`data.demo`), whose generator knows the
box of every digit. The run's best weights (its export) score the test split in eval mode, as evaluation does;
for every (test image, clean positive class) pair the script reads that class's CAM and prints, per run:

  pointing  the share of pairs whose CAM peak (the centre of its highest cell) lies in the class's box
  mass      the share of the CAM's positive part inside the class's box, the CAM upsampled bilinearly to the
            canvas as the masking does
  chance    the mean share of the canvas a box covers: what a CAM that localises nothing scores on both

BoostLU multiplies the positive CAM values before the average; that changes neither figure, so runs of different
methods compare on what their network learned to localise. A script with printed figures, not a test.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ignore.config import load_config
from ignore.data.demo import CANVAS_SIZE, canvas_path, ensure_demo_dataset, generate_canvases
from ignore.data.format import load_dataset
from ignore.data.torch_dataset import SPMLImageDataset, collate_skipping
from ignore.data.views import eval_view
from ignore.errors import SPMLError, exit_on_error, require_at_least
from ignore.models.export import load_export


def test_objects(dataset):
    """Per test row, the demo generator's [(class, box)], checked against the split's images and clean labels."""
    protocol = dataset.meta["protocol"]
    _, label_matrix, boxes, labels = generate_canvases(protocol["demo_seed"], protocol["num_train"],
                                                       protocol["num_test"], protocol["demo_layout"])["test"]
    test = dataset.splits["test"]
    if list(test["image"]) != [canvas_path("test", row) for row in range(len(boxes))] or not np.array_equal(
            np.asarray(test["labels"]), label_matrix):
        raise SPMLError(f"{dataset.folder}: its test split is not the demo generator's (rebuild the demo dataset)")
    return [list(zip(row_labels, row_boxes)) for row_labels, row_boxes in zip(labels, boxes)]


@torch.no_grad()
def run_figures(run_dir, batch_size):
    config = load_config(run_dir / "config.yaml")
    if not config.data.demo or config.data.path:
        raise SPMLError(f"{run_dir}: not a run on a built-in demo dataset (data.demo), so no boxes are known")
    dataset = load_dataset(ensure_demo_dataset(seed=config.data.demo_seed, layout=config.data.demo))
    objects = test_objects(dataset)
    network = load_export(run_dir / "export").network.eval()
    view = eval_view(config.data.image_size, network.normalisation)
    loader = DataLoader(SPMLImageDataset(dataset.splits["test"], dataset.image_root, {"image": view}),
                        batch_size=batch_size, collate_fn=collate_skipping)
    hits = mass = pairs = 0
    for batch in loader:
        sums = cam_figures(network(batch["image"])["cam"].float(), [objects[row] for row in batch["index"].tolist()])
        hits, mass, pairs = hits + sums[0], mass + sums[1], pairs + sums[2]
    chance = np.mean([(x1 - x0) * (y1 - y0) / CANVAS_SIZE ** 2 for row_objects in objects
                      for _, (x0, y0, x1, y1) in row_objects])
    return hits / pairs, mass / pairs, chance, pairs


def cam_figures(cam, objects):
    """(pairs whose CAM peak is in the box, summed in-box shares of the positive CAM, pairs) of a batch:
    cam (N, C, h, w) over 64x64 canvases, objects[i] the [(class, (x0, y0, x1, y1))] of image i."""
    height, width = cam.shape[-2:]
    canvas_cam = F.interpolate(cam, size=(CANVAS_SIZE, CANVAS_SIZE), mode="bilinear", align_corners=False)
    hits, mass, pairs = 0, 0.0, 0
    for position, image_objects in enumerate(objects):
        for label, (x0, y0, x1, y1) in image_objects:
            peak = int(cam[position, label].flatten().argmax())
            x = (peak % width + 0.5) * CANVAS_SIZE / width
            y = (peak // width + 0.5) * CANVAS_SIZE / height
            hits += int(x0 <= x < x1 and y0 <= y < y1)
            positive = canvas_cam[position, label].clamp(min=0)
            total = float(positive.sum())
            mass += float(positive[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0
            pairs += 1
    return hits, mass, pairs


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--batch-size", type=int, default=64)
    arguments = parser.parse_args(argv)
    require_at_least(arguments, {"--batch-size": 1})
    print("| run | pointing | mass | chance | pairs |\n|---|---|---|---|---|")
    for run_dir in arguments.run_dirs:
        pointing, mass, chance, pairs = run_figures(run_dir, arguments.batch_size)
        print(f"| {run_dir} | {pointing:.3f} | {mass:.3f} | {chance:.3f} | {pairs} |", flush=True)


if __name__ == "__main__":
    main()
