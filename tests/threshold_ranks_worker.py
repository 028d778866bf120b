"""Launched by test_threshold_ranks.py under `accelerate launch --num_processes 2`.

Every rank updates GapThresholds with its shard of the same global batches (uneven
shards, one rank with no observed positive in one step); rank 0 then replays the global
batches in one process and writes both results to the JSON file named on the command line,
with what identical_across_ranks says of the thresholds and of a zero whose sign differs by rank.
Then rank 1 alone receives a SIGTERM, and each rank records whether the run stops (the
preemption flag, before and after). Last, both ranks adopt another run folder's export on a resume, rank 1
looking a second after rank 0 has copied it, and record what they said and their best epoch.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from ignore.losses.thresholds import GapThresholds
from ignore.training.checkpoint import Progress, adopt_best_export
from ignore.training.preemption import StopOnSigterm
from ignore.training.ranks import identical_across_ranks

NUM_CLASSES, STEPS = 5, 6
SHARD_SIZES = [(5, 3), (4, 4), (2, 6), (6, 1), (3, 3), (1, 7)]


def global_batch(step):
    generator = torch.Generator().manual_seed(step)
    rows = sum(SHARD_SIZES[step])
    gap = torch.rand(rows, NUM_CLASSES, generator=generator) * 3
    logits = torch.randn(rows, NUM_CLASSES, generator=generator) * 4
    positive = torch.rand(rows, NUM_CLASSES, generator=generator) < 0.3
    if step == 2:
        positive[: SHARD_SIZES[step][0]] = False  # rank 0 sees no observed positive here
    return gap, logits, positive


def adoption(accelerator, folder):
    """What each rank says and keeps when it resumes another folder's checkpoint whose export holds epoch 1."""
    export = folder / "other_run" / "export"
    if accelerator.is_main_process:
        export.mkdir(parents=True)
        (export / "config.json").write_text(json.dumps({"epoch": 1}))
    accelerator.wait_for_everyone()
    if accelerator.process_index == 1:
        time.sleep(1.0)  # rank 0 has copied the export by the time rank 1 looks
    said, progress = [], Progress(best_epoch=1, best_val_map=50.0)
    adopt_best_export(accelerator, folder / "other_run" / "checkpoints" / "step-000000004", folder / "this_run",
                      progress, said.append)
    return said, progress.best_epoch


def main(out_path):
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    thresholds = GapThresholds(NUM_CLASSES, gap_lambda=0.9, avg_lambda=0.8)
    for step in range(STEPS):
        start = sum(SHARD_SIZES[step][:rank])
        shard = slice(start, start + SHARD_SIZES[step][rank])
        gap, logits, positive = global_batch(step)
        thresholds.update(gap[shard], logits[shard], positive[shard],
                          lambda statistics: accelerator.reduce(statistics, reduction="sum"))
    mine = torch.cat([thresholds.gap_threshold.reshape(1), thresholds.avg_threshold])
    every_rank = accelerator.gather(mine[None]).view(accelerator.num_processes, -1)
    signed_zero = torch.tensor([0.0 if rank == 0 else -0.0])  # equal as numbers, not as bits
    identical = [identical_across_ranks(accelerator, [thresholds.gap_threshold, thresholds.avg_threshold]),
                 identical_across_ranks(accelerator, [thresholds.gap_threshold, signed_zero])]
    with StopOnSigterm(accelerator) as stop:
        before = stop.agreed()
        if rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler might reach one node first
        stopping = [before, stop.agreed()]
    every_rank_stopping = accelerator.gather(torch.tensor([stopping]))
    adopted = adoption(accelerator, Path(out_path).parent)
    every_rank_adopted = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(every_rank_adopted, adopted)
    if accelerator.is_main_process:
        single = GapThresholds(NUM_CLASSES, gap_lambda=0.9, avg_lambda=0.8)
        for step in range(STEPS):
            single.update(*global_batch(step), reduce_sum=lambda statistics: statistics)
        result = {
            "ranks": [[value.hex() for value in row.tolist()] for row in every_rank],
            "single_process": [single.gap_threshold.item()] + single.avg_threshold.tolist(),
            "rank0": every_rank[0].tolist(),
            "stopping": every_rank_stopping.tolist(),
            "identical_across_ranks": identical,
            "adopted": every_rank_adopted,
        }
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # leaves the process group cleanly on both ranks


if __name__ == "__main__":
    main(sys.argv[1])
