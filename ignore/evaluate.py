"""Evaluate an exported model on a split of a dataset: mAP, per-class AP, CF1, OF1 (at 0.5 and at the model's
decision thresholds).

    python -m ignore.evaluate --model runs/demo/export [--data DATASET] [--split test] [--out metrics.json]
    accelerate launch -m ignore.evaluate --model ... --data ...     # a large test set on every GPU

DATASET is a folder in our format (empty: the built-in demo), or a HuggingFace dataset with
--image-column and --label-column, as training reads it. The metrics are those of the training run's
test (the same `evaluate`, predictions gathered from every process, padding dropped).
"""
import argparse
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .files import require_writable_file, write_json_atomic
from .config import DataConfig
from .data.loading import load_spml_data
from .data.torch_dataset import SPMLImageDataset, collate_skipping
from .training.loop import evaluate
from .errors import SPMLError, exit_on_error, require_at_least
from .inference import load_export, preprocessing
from .metrics import results_table, verified_note


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export folder (runs/NAME/export) or a Hub repository")
    parser.add_argument("--data", default="", help="a dataset folder (default: the built-in demo)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", help="also write the metrics to this JSON file")
    parser.add_argument("--image-column", default="", help="bring your own HF dataset: its image column")
    parser.add_argument("--label-column", default="", help="bring your own HF dataset: its multi-label column")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader processes per process")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    require_at_least(args, {"--batch-size": 1, "--num-workers": 0})
    if args.out:
        require_writable_file(args.out, "--out")  # before the evaluation, whose results would be lost
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = load_export(args.model)
    data = load_spml_data(DataConfig(path=args.data, image_column=args.image_column, label_column=args.label_column),
                          accelerator)
    if data.class_names != model.class_names:
        raise SPMLError(f"{args.data or 'the demo dataset'}: its classes {abridged(data.class_names)} are not the "
                        f"model's {abridged(model.class_names)}")
    dataset = SPMLImageDataset(data.splits[args.split], data.image_root, {"image": preprocessing(model)})
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate_skipping)
    loader = accelerator.prepare(loader)  # each process a shard; the model needs no DDP wrapper to infer
    metrics, _, _, _ = evaluate(model.to(accelerator.device), loader, accelerator, thresholds=model.thresholds,
                                split=args.split)
    summary = {"model": str(args.model), "data": args.data or "demo", "split": args.split, "images": len(dataset),
               **metrics}
    if accelerator.is_main_process and args.out:
        write_json_atomic(Path(args.out), summary)
    accelerator.print(results_table(data.class_names, metrics, args.split))
    accelerator.print(f"{args.split} ({len(dataset)} images): mAP {metrics['mAP']:.2f}  CF1 {metrics['CF1']:.2f}  "
                      f"OF1 {metrics['OF1']:.2f}  (at the model's decision thresholds: CF1 "
                      f"{metrics['CF1_val_thresholds']:.2f}  OF1 {metrics['OF1_val_thresholds']:.2f})"
                      + verified_note(metrics))


def abridged(names, shown=8):
    return str(names) if len(names) <= shown else f"{names[:shown]} and {len(names) - shown} more"


if __name__ == "__main__":
    main()
