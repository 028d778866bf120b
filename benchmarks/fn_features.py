"""Benchmark: how well each score a step could compute ranks the false negatives of a finished run.

    python benchmarks/fn_features.py RUN_DIR [--batch-size 32]

RUN_DIR is a finished `ignore-train` run on a dataset with clean labels (its export and config.yaml). The run's
best weights score the train and validation splits without augmentation, as IGNORE's step scores a batch
(BatchNorm on each batch's own statistics, no running statistics touched): the weak logit, the masked image's
logit and their drop (IGNORE's gap), the logit minus its class's mean, and two readings of the CAM that need no
second forward: each class's peak CAM value outside its image's observed-positive region (the region the masked
image keeps) and inside it. For the unannotated training labels, the script prints each score's AUROC and
average precision against the clean labels, then logistic combinations fitted on the validation split (as
`method.rule=calibrated` fits) and scored on the training split: AUROC, AP, and at three probability thresholds
the share of entries rejected, their precision and the recall of the false negatives. A script with printed
figures, not a test.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader

from ignore.config import load_config
from ignore.data.loading import load_spml_data
from ignore.data.torch_dataset import SPMLImageDataset, collate_skipping
from ignore.data.views import eval_view
from ignore.errors import SPMLError, exit_on_error, require_at_least
from ignore.losses.ignore import Ignore, batchnorm_mode
from ignore.losses.masking import positive_cam
from ignore.models.export import load_export

COMBINATIONS = (("logit", "drop"), ("logit", "outside_peak"), ("drop", "outside_peak"), ("drop", "logit", "outside_peak"),
                ("logit", "drop", "outside_peak", "inside_peak"))
PROBABILITIES = (0.2, 0.35, 0.5)


@torch.no_grad()
def split_scores(network, method, split, data, config, batch_size):
    """{score name: (N, C)}, "false_negative" and "unannotated" (N, C) bool, over one split."""
    dataset = SPMLImageDataset(split, data.image_root, {"image": eval_view(config.data.image_size,
                                                                          network.normalisation)})
    # drop_last: batch statistics need two images
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skipping, drop_last=True)
    parts = {name: [] for name in ("logit", "drop", "outside_peak", "inside_peak", "false_negative",
                                   "unannotated")}
    network.train()
    with batchnorm_mode(network, "batch"):
        for batch in loader:
            images, positive = batch["image"], batch["observed"] == 1
            output = network(images)
            cam, logits = output["cam"].float(), output["logits"].float()
            _, masked_logits = method.masked_pass(network, images, cam, positive)  # the step's own masked pass
            settings = config.method
            region = positive_cam(cam, positive, cam.shape[-2:], settings.cam_normalisation) > settings.cam_threshold
            inside = region.expand_as(cam)
            parts["outside_peak"].append(method.outside_peak(cam, positive))  # the calibrated rule's feature
            parts["inside_peak"].append(cam.masked_fill(~inside, float("-inf")).flatten(2).amax(2))
            parts["logit"].append(logits)
            parts["drop"].append(logits - masked_logits)
            unknown = batch["observed"] == 0
            parts["unannotated"].append(unknown)
            parts["false_negative"].append((batch["labels"] == 1) & unknown)
    scores = {name: torch.cat(values).numpy() for name, values in parts.items()}
    unknown = scores["unannotated"]
    class_mean = (scores["logit"] * unknown).sum(0) / np.maximum(unknown.sum(0), 1)
    scores["logit_minus_class_mean"] = scores["logit"] - class_mean
    return scores


def entries(scores):
    """The unannotated entries: {score name: (M,)} and the (M,) false-negative targets."""
    unknown = scores["unannotated"]
    names = [name for name in scores if name not in ("unannotated", "false_negative")]
    return {name: scores[name][unknown] for name in names}, scores["false_negative"][unknown]


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args(argv)
    require_at_least(arguments, {"--batch-size": 1})
    torch.manual_seed(0)
    config = load_config(arguments.run_dir / "config.yaml")
    network = load_export(arguments.run_dir / "export").network
    accelerator = Accelerator(cpu=True)
    data = load_spml_data(config.data, accelerator)
    method = Ignore(config.method, len(data.class_names), accelerator, normalisation=network.normalisation)
    train, train_fn = entries(split_scores(network, method, data.splits["train"], data, config, arguments.batch_size))
    val, val_fn = entries(split_scores(network, method, data.splits["val"], data, config, arguments.batch_size))
    if not train_fn.any() or not val_fn.any():
        raise SPMLError(f"{arguments.run_dir}: no unannotated label is positive in the clean labels of the train "
                        "or the validation split: nothing to rank")
    print(f"{arguments.run_dir}: {len(train_fn)} unannotated training labels, {100 * train_fn.mean():.2f}% false "
          f"negatives ({len(val_fn)} on the validation split, {100 * val_fn.mean():.2f}%)")
    print("\n| score (training split) | AUROC | AP |\n|---|---|---|")
    for name, values in train.items():
        print(f"| {name} | {roc_auc_score(train_fn, values):.3f} | {average_precision_score(train_fn, values):.3f} |")
    print("\n| logistic fit on the validation split, scored on the training split | AUROC | AP | "
          + " | ".join(f"P > {p}: rejected, precision, recall" for p in PROBABILITIES) + " |")
    print("|---|---|---|" + "---|" * len(PROBABILITIES))
    for names in COMBINATIONS:
        model = LogisticRegression().fit(np.stack([val[name] for name in names], 1), val_fn)
        probability = model.predict_proba(np.stack([train[name] for name in names], 1))[:, 1]
        cells = []
        for threshold in PROBABILITIES:
            rejected = probability > threshold
            precision = train_fn[rejected].mean() if rejected.any() else float("nan")
            recall = (rejected & train_fn).sum() / train_fn.sum()
            cells.append(f"{100 * rejected.mean():.2f}%, {precision:.2f}, {recall:.2f}")
        print(f"| {' + '.join(names)} | {roc_auc_score(train_fn, probability):.3f} | "
              f"{average_precision_score(train_fn, probability):.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
