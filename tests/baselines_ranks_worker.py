"""Launched by test_baselines_ranks.py under `accelerate launch --num_processes 2`.

1. write_shared_rows with uneven shards (rank 0 two rows, rank 1 one) that share a row.
2. role, ll_cp, em_apl and vlpl steps on each rank's shard of the same global batches (one step
   with uneven shards); every buffer of every method is then gathered as hex floats. vlpl's noisy
   oracle teacher first scores 13 of the 16 rows (uneven shares: 7 and 6) into a cache beside the
   JSON file; building the method then scores only the 3 rows missing.
3. role, ll_cp and em_apl again on the same batches with their tables in files of one folder
   (train.row_state_dir), filled and labelled a few rows at a time; then a table that rank 1 writes
   without a gather, which rank 0 must read: the two processes map one copy.
Rank 0 writes the JSON file named on the command line.
"""
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from ignore.config import MethodConfig
from ignore.losses.registry import build_method
from ignore.losses.noisy_oracle import NoisyOracle
from ignore.losses import row_state
from ignore.losses.row_state import is_mapped, new_table, write_shared_rows
from ignore.losses.teacher import TrainingImages, shared_teacher_scores

NUM_ROWS, NUM_CLASSES = 16, 4
SHARDS = [(4, 4), (4, 4), (5, 3), (4, 4)]  # images of each rank in each step of an epoch
MAPPED = ("role", "ll_cp", "em_apl")  # the methods with tables that train.row_state_dir puts in files
SMALL_BLOCKS = 40  # bytes: blocks of 2 or 3 rows of 4 classes (10 of a row of visits)


# the noisy oracle's clean labels of the 16 rows
TEACHER_LABELS = ((torch.arange(NUM_ROWS)[:, None] + torch.arange(NUM_CLASSES)) % 3 == 0).float().tolist()


class LabelsOnly(list):
    """A training split as the noisy oracle reads it: its labels, a length, the datasets library's fingerprint."""

    _fingerprint = "ranks"

    def __getitem__(self, column):
        return list(self) if column == "labels" else super().__getitem__(column)


class ImageIsCAM(nn.Module):
    def forward(self, images):
        return {"cam": images, "logits": images.mean(dim=(2, 3))}


def global_batch(epoch, step):
    generator = torch.Generator().manual_seed(100 * epoch + step)
    size = sum(SHARDS[step])
    rows = torch.randperm(NUM_ROWS, generator=generator)[:size]
    images = torch.randn(size, NUM_CLASSES, 1, 2, generator=generator) * 2
    observed = torch.zeros(size, NUM_CLASSES)
    observed[torch.arange(size), rows % NUM_CLASSES] = 1  # a row's observed positive never changes
    labels = ((observed + (torch.rand(size, NUM_CLASSES, generator=generator) < 0.4)) > 0).float()
    return {"weak": images, "observed": observed, "labels": labels, "index": rows}


def main(out_path):
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    result = {}

    shared = torch.zeros(5, 2)
    rows, values = (torch.tensor([3, 1]), torch.tensor([[10.0, 10.5], [11.0, 11.5]])) if rank == 0 else \
        (torch.tensor([1]), torch.tensor([[20.0, 20.5]]))
    write_shared_rows(accelerator, rows, [shared], [values])
    result["shared"] = accelerator.gather(shared[None]).tolist()

    folder = Path(out_path).parent
    images = TrainingImages(LabelsOnly(TEACHER_LABELS), 13, folder, folder, [f"c{c}" for c in range(NUM_CLASSES)])
    oracle = NoisyOracle(TEACHER_LABELS, 0.5)
    result["first_13_rows"] = shared_teacher_scores(accelerator, oracle, oracle.name, images).tolist()
    images.rows = NUM_ROWS
    context = dict(num_train_rows=NUM_ROWS, positives_per_image=1.5, lr=0.01, epochs=3, seed=7, train_images=images)
    settings = {"role": {}, "ll_cp": {"ll_delta_rel": 10.0}, "em_apl": {"warm_up": 1},
                "vlpl": {"teacher": "noisy_oracle", "teacher_noise": 0.5}}
    for name in settings:
        method = build_method(MethodConfig(name=name, **settings[name]), NUM_CLASSES, accelerator, **context)
        result[name] = trained(accelerator, method)

    tables = folder / "row_tables"
    row_state.BLOCK_BYTES = SMALL_BLOCKS
    for name in MAPPED:
        method = build_method(MethodConfig(name=name, **settings[name]), NUM_CLASSES, accelerator, **context,
                              row_state_dir=str(tables))
        result[f"{name}_mapped"] = trained(accelerator, method)
        result[f"{name}_mapped"]["mapped"] = {key: is_mapped(value) for key, value in method.state_dict().items()}
    table = new_table(accelerator, str(tables), (3, 2), fill=lambda start, stop: torch.arange(2 * start, 2 * stop)
                      .view(-1, 2).float())
    if rank == 1:
        table[2, 1] = 99.0  # on rank 1 only: no gather
    accelerator.wait_for_everyone()
    result["written_by_rank1"] = accelerator.gather(table[None].clone()).tolist()
    result["files_left"] = os.listdir(tables)
    if accelerator.is_main_process:
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def trained(accelerator, method):
    """Three epochs of `method` on this rank's shards of the global batches: every buffer of every rank as hex
    floats, this rank's buffers, and the rows that rank 1 saw."""
    rank = accelerator.process_index
    model = ImageIsCAM()
    seen_by_rank1 = set()
    for epoch in range(3):
        for step in range(len(SHARDS)):
            batch = global_batch(epoch, step)
            start = sum(SHARDS[step][:rank])
            shard = {key: value[start:start + SHARDS[step][rank]] for key, value in batch.items()}
            seen_by_rank1 |= set(batch["index"][SHARDS[step][0]:].tolist())
            method.step(model, shard, epoch)
    state = torch.cat([buffer.double().flatten() for buffer in method.buffers()])
    every_rank = accelerator.gather(state[None])
    return {"ranks": [[value.hex() for value in row.tolist()] for row in every_rank],
            "buffers": {key: value.double().tolist() for key, value in method.state_dict().items()},
            "rows_seen_by_rank1": sorted(seen_by_rank1)}


if __name__ == "__main__":
    main(sys.argv[1])
