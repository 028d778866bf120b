"""Launched by test_streaming.py under `accelerate launch --num_processes 2`.

For each shard folder named on the command line, every rank builds the streamed train loader the trainer builds
(batch 4), reads epochs 0 and 1 whole, then epoch 1 again skipping its first batch, as a resumed run does; rank 0
writes every rank's dataset rows, batch by batch, to the JSON file named first.
"""
import json
import sys

from accelerate import Accelerator
from accelerate.utils import gather_object

from ignore.config import DataConfig
from ignore.data.loading import build_loaders, load_spml_data
from ignore.data.views import IMAGENET

BATCH = 4


def rows_of(loader):
    return [batch["index"].tolist() for batch in loader]


def main(out_path, dataset, *shard_folders):
    accelerator = Accelerator(cpu=True)
    found = {}
    for folder in shard_folders:
        config = DataConfig(path=dataset, train_shards=folder, image_size=8, num_workers=0)
        loader, _, _ = build_loaders(load_spml_data(config, accelerator), config, ("weak",), BATCH, seed=5,
                                     normalisation=IMAGENET, accelerator=accelerator)
        epochs = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            epochs.append(rows_of(loader))
        loader.set_epoch(1)
        resumed = rows_of(loader.skip_first_batches(1))
        mine = {"length": len(loader), "epochs": epochs, "resumed": resumed}
        found[folder] = gather_object([mine])
    if accelerator.is_main_process:
        with open(out_path, "w") as handle:
            json.dump(found, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
