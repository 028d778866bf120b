"""The one training loop and the evaluation; methods plug in through `method.step`."""
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import require_finite, save_checkpoint
from .detection import DetectionCollector
from .errors import SPMLError
from .metrics import multilabel_metrics


@dataclass
class Run:
    """What the loop needs, wired by train.py."""

    config: object
    accelerator: object
    model: object
    method: object
    optimizer: object
    scheduler: object
    progress: object


@dataclass
class Meter:
    """Sums of a method's parts and counts since the last log, kept on the device."""

    parts: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    steps: int = 0

    def add(self, output):
        for name, value in [("loss", output["loss"].detach().float())] + list(output["parts"].items()):
            self.parts[name] = self.parts.get(name, 0) + value.float()
        for name, value in output["counts"].items():
            self.counts[name] = self.counts.get(name, 0) + value
        self.steps += 1

    def summary(self, accelerator, ratios):
        """Means of the parts on this rank, counts and ratios summed over all ranks (one sync)."""
        names = sorted(self.parts) + sorted(self.counts)
        values = torch.stack([self.parts[n] / self.steps for n in sorted(self.parts)]
                             + [self.counts[n].float() for n in sorted(self.counts)])
        counts = accelerator.reduce(values[len(self.parts):], reduction="sum")
        values = torch.cat([values[:len(self.parts)], counts]).tolist()
        logs = dict(zip(names, values))
        for ratio, (numerator, denominator) in ratios.items():
            if logs.get(denominator, 0) > 0:
                logs[ratio] = logs[numerator] / logs[denominator]
        return logs


@dataclass
class EpochResult:
    train: dict  # the epoch's means and summed counts (all ranks), with the detection AUROCs
    skipped: int  # unreadable images skipped on this rank
    detection: dict  # {score: {"true_fn": values, "true_negative": values}} of all ranks


def train_one_epoch(run, epoch, loader, progress_bar):
    """One pass over `loader` (already advanced past the steps of a resumed epoch): an EpochResult."""
    model, method, optimizer, scheduler, accelerator = run.model, run.method, run.optimizer, run.scheduler, run.accelerator
    config = run.config.train
    model.train()
    meter, epoch_meter, detection, skipped = Meter(), Meter(), DetectionCollector(), 0
    for batch in loader:
        with accelerator.accumulate(model):
            output = method.step(model, batch, epoch)
            accelerator.backward(output["loss"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        meter.add(output)
        epoch_meter.add(output)
        if "detection" in output:
            detection.add(output["detection"])
        if len(batch["skipped"]):  # a shape, not a value: no synchronisation unless something was skipped
            skipped += len(batch["skipped"])
            accelerator.print(f"skipped unreadable images: train rows {batch['skipped'].tolist()}")
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        run.progress.step_in_epoch += 1
        run.progress.global_step += 1
        progress_bar.update(1)
        step = run.progress.global_step
        if step % config.log_every == 0:
            log_interval(run, meter, step)
            meter = Meter()
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
            save_checkpoint(run)
        if config.max_steps and step >= config.max_steps:
            break
    if meter.steps:
        log_interval(run, meter, run.progress.global_step)
    epoch_summary = epoch_meter.summary(accelerator, method.ratios) if epoch_meter.steps else {}
    aurocs, groups = detection.summary(accelerator)
    return EpochResult({**epoch_summary, **aurocs}, skipped, groups)


def log_interval(run, meter, step):
    """Log the interval's means; stop the run if a loss part, a weight or a statistic is not finite."""
    logs = meter.summary(run.accelerator, run.method.ratios)
    bad = {name: value for name, value in logs.items() if not math.isfinite(value)}
    if bad:
        first = step - meter.steps + 1
        parts = ", ".join(f"{name}={value:.4g}" for name, value in logs.items() if name in meter.parts)
        raise SPMLError(f"non-finite loss at step {first}..{step} (interval means: {parts})")
    require_finite(run, f"at step {step}")  # a huge step can leave the loss finite but a statistic inf
    logs = {f"train/{name}": value for name, value in logs.items()}
    for index, group in enumerate(run.optimizer.param_groups):
        logs[f"lr/group{index}"] = group["lr"]
    run.accelerator.log(logs, step=step)


@torch.no_grad()
def evaluate(model, loader, accelerator, eval_logits=lambda output: output["logits"]):
    """Metrics on clean labels over the whole split, from every rank, padding dropped.

    eval_logits: the method's (Method.eval_logits), which BoostLU changes.
    """
    model.eval()
    scores, labels = [], []
    for batch in loader:
        if len(batch["skipped"]):
            raise SPMLError(f"unreadable evaluation images (rows {batch['skipped'].tolist()}): "
                            "metrics would silently cover fewer images")
        with accelerator.autocast():
            logits = eval_logits(model(batch["image"]))
        batch_scores, batch_labels = accelerator.gather_for_metrics((torch.sigmoid(logits.float()), batch["labels"]))
        scores.append(batch_scores.cpu())
        labels.append(batch_labels.cpu())
    scores, labels = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    return multilabel_metrics(scores, labels), scores.astype(np.float32)
