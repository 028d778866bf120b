"""Launched by test_process_equivalence.py: alone (one process, the whole global batch) and
under `accelerate launch --num_processes 2` (each process half of it).

Three IGNORE steps of a small CAM model on the same global batches, twice: BatchNorm over
the global batch (model.sync_batchnorm) and per process. Rank 0 writes each step's
gradients, the weights, the BatchNorm running statistics, IGNORE's thresholds and the
rejected counts to the file named on the command line (torch.save). It also checks
`masked_mean` alone: the gradient DDP would average over ranks of a loss whose ranks
select uneven numbers of entries.
"""
import sys

import torch
import torch.distributed as dist
from accelerate import Accelerator

from ignore.config import MethodConfig
from ignore.losses.base import masked_mean
from ignore.losses.ignore import Ignore
from ignore.models.cam_model import CAMClassifier
from ignore.models.sync_batchnorm import synchronise_batchnorm

NUM_CLASSES, GLOBAL_BATCH, STEPS = 4, 8, 3


def global_batch(step):
    generator = torch.Generator().manual_seed(100 + step)
    labels = (torch.rand(GLOBAL_BATCH, NUM_CLASSES, generator=generator) < 0.5).float()
    labels[torch.arange(GLOBAL_BATCH), torch.arange(GLOBAL_BATCH) % NUM_CLASSES] = 1.0
    observed = torch.zeros_like(labels)
    observed[torch.arange(GLOBAL_BATCH), torch.arange(GLOBAL_BATCH) % NUM_CLASSES] = 1.0
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator)
    return {"weak": images, "labels": labels, "observed": observed}


def shard(batch, accelerator):
    size = GLOBAL_BATCH // accelerator.num_processes
    rows = slice(accelerator.process_index * size, (accelerator.process_index + 1) * size)
    return {name: value[rows] for name, value in batch.items()}


def train(accelerator, global_statistics):
    torch.manual_seed(0)
    model = CAMClassifier("small_cnn", NUM_CLASSES)
    if global_statistics and accelerator.num_processes > 1:
        model = synchronise_batchnorm(model, accelerator.device)
    method = Ignore(MethodConfig(rule="ema", warm_up=0, gap_lambda=0.5, avg_lambda=0.5), NUM_CLASSES, accelerator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    gradients, rejected = [], []
    for step in range(STEPS):
        output = method.step(model, shard(global_batch(step), accelerator), epoch=1)
        accelerator.backward(output.loss)
        gradients.append(torch.cat([parameter.grad.flatten() for parameter in model.parameters()]))
        rejected.append(accelerator.gather(output.counts["rejected"].reshape(1)))
        optimizer.step()
        optimizer.zero_grad()
    state = accelerator.unwrap_model(model).state_dict()
    return {"gradients": gradients, "state": {name: value.clone() for name, value in state.items()},
            "thresholds": torch.cat([method.thresholds.gap_threshold.reshape(1), method.thresholds.avg_threshold]),
            "rejected_per_rank": rejected}


def masked_mean_gradient(accelerator):
    """d/dv of the DDP average of every rank's masked_mean: rank 0 selects 1 entry, rank 1 three."""
    values = torch.arange(8, dtype=torch.float32, requires_grad=True)
    mask = torch.tensor([0, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    rows = shard({"values": torch.arange(8), "mask": mask}, accelerator)
    masked_mean(values[rows["values"]], rows["mask"]).backward()
    gradient = values.grad.clone()
    if accelerator.num_processes > 1:
        dist.all_reduce(gradient)
        gradient /= accelerator.num_processes  # what DDP does to gradients
    return gradient


def main(out_path):
    accelerator = Accelerator(cpu=True)
    result = {"global": train(accelerator, True), "per_process": train(accelerator, False),
              "masked_mean_gradient": masked_mean_gradient(accelerator)}
    if accelerator.is_main_process:
        torch.save(result, out_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
