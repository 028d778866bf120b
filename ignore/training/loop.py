"""The one training loop: the epochs (fit), one epoch (train_one_epoch), evaluation and the test.

Methods plug in through `method.step`; nothing here branches on the method.
"""
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..errors import SPMLError
from ..files import write_bytes_atomic, write_json_atomic
from ..metrics import cf1_of1, f1_thresholds, multilabel_metrics, results_table, verified_note
from ..models.export import add_test_metrics, read_info, settle_export
from ..models.predicting import decision_thresholds
from .checkpoint import EXPORT, export_model, network, require_finite, save_checkpoint
from .console import progress_bar, say
from .fn_scores import FNScoreCollector, histogram
from .optim import PARAM_GROUPS
from .ranks import identical_across_ranks
from .tracking import fn_score_line, log_histograms, log_pictures


DIVERGENCE = 1000.0  # a loss this many times its start (a trained loss falls) is a run that diverged


@dataclass
class Run:
    """What the loop needs, wired by training/run.py."""

    config: object
    accelerator: object
    model: object
    method: object
    optimizer: object
    scheduler: object
    progress: object
    stop: object  # preemption.StopOnSigterm


@dataclass
class Meter:
    """Sums of a method's parts and counts since the last log, kept on the device; this rank's batches, images and
    optimiser steps, the gradient norm of the interval's first optimiser step, and when the interval started."""

    parts: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    steps: int = 0
    images: int = 0
    optimiser_steps: int = 0
    grad_norm: torch.Tensor = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, output, images):
        for name, value in [("loss", output.loss.detach().float())] + list(output.parts.items()):
            self.parts[name] = self.parts.get(name, 0) + value.float()
        for name, value in output.counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        self.steps += 1
        self.images += images

    def summary(self, accelerator, ratios):
        """Means of the parts on this rank, the gradient norm (the same on every rank: DDP averaged the
        gradients), counts and ratios summed over all ranks (one sync)."""
        own = {name: self.parts[name] / self.steps for name in sorted(self.parts)}
        if self.grad_norm is not None:
            own["grad_norm"] = self.grad_norm
        names = list(own) + sorted(self.counts)
        values = torch.stack(list(own.values()) + [self.counts[n].float() for n in sorted(self.counts)])
        counts = accelerator.reduce(values[len(own):], reduction="sum")
        values = torch.cat([values[:len(own)], counts]).tolist()
        logs = dict(zip(names, values))
        for ratio, (numerator, denominator) in ratios.items():
            if logs.get(denominator, 0) > 0:
                logs[ratio] = logs[numerator] / logs[denominator]
        return logs


@dataclass
class EpochResult:
    train: dict  # the epoch's means and summed counts (all ranks), with the false-negative score AUROCs
    skipped: int  # unreadable images skipped on this rank
    fn_scores: dict  # {score: {"true_fn": values, "true_negative": values}} of all ranks


def train_one_epoch(run, epoch, loader, progress_bar):
    """One pass over `loader` (already advanced past the steps of a resumed epoch): an EpochResult."""
    model, method, optimizer, scheduler, accelerator = run.model, run.method, run.optimizer, run.scheduler, run.accelerator
    config = run.config.train
    model.train()
    meter, epoch_meter, fn_scores, skipped = Meter(), Meter(), FNScoreCollector(), 0
    for batch in loader:
        with accelerator.accumulate(model):
            output = method.step(model, batch, epoch)
            accelerator.backward(output.loss)
            if accelerator.sync_gradients and meter.grad_norm is None:  # one norm a log interval: it costs a pass
                meter.grad_norm = gradient_norm(model, accelerator)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        images = len(batch["observed"])
        meter.add(output, images)
        epoch_meter.add(output, images)
        if run.progress.first_loss is None:  # once: one synchronisation in the whole run
            run.progress.first_loss = accelerator.reduce(output.loss.detach().float(), reduction="mean").item()
        if output.fn_scores is not None:
            fn_scores.add(output.fn_scores)
        if len(batch["skipped"]):  # a shape, not a value: no synchronisation unless something was skipped
            skipped += len(batch["skipped"])
            say(f"skipped unreadable images: train rows {batch['skipped'].tolist()}")
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        meter.optimiser_steps += 1
        run.progress.step_in_epoch += 1
        run.progress.global_step += 1
        progress_bar.update(1)
        step = run.progress.global_step
        if step % config.log_every == 0:
            log_interval(run, meter, step, progress_bar)
            meter = Meter()
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
            save_checkpoint(run)
        if config.max_steps and step >= config.max_steps:
            break
        if run.stop.agreed():  # SIGTERM: fit checkpoints this step
            break
    if meter.steps:
        log_interval(run, meter, run.progress.global_step, progress_bar)
    epoch_summary = epoch_meter.summary(accelerator, method.ratios) if epoch_meter.steps else {}
    aurocs, groups = fn_scores.summary(accelerator)
    return EpochResult({**epoch_summary, **aurocs}, skipped, groups)


def gradient_norm(model, accelerator):
    """The L2 norm of all gradients, as the optimiser gets them (unscaled under fp16), a tensor on the device."""
    accelerator.unscale_gradients()  # the GradScaler then does not unscale them again at the step
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]).float()


def log_interval(run, meter, step, progress_bar):
    """Log the interval's means, the learning rate of each parameter group, the gradient norm and the speed,
    and show the loss and the learning rate on the progress bar; stop the run if a loss part, a weight or a
    statistic is not finite, or if the loss diverged: its interval mean above DIVERGENCE times the first step's
    loss (or than 1, if larger). The gradient norm may be inf under fp16: the GradScaler skips that step."""
    logs = meter.summary(run.accelerator, run.method.ratios)
    seconds = time.perf_counter() - meter.started  # after the summary's sync: the interval's work is done
    first = step - meter.optimiser_steps + 1
    bad = {name: logs[name] for name in meter.parts if not math.isfinite(logs[name])}
    if bad:
        parts = ", ".join(f"{name}={value:.4g}" for name, value in logs.items() if name in meter.parts)
        raise SPMLError(f"non-finite loss at step {first}..{step} (interval means: {parts})")
    require_finite(run, f"at step {step}")  # a huge step can leave the loss finite but a statistic inf
    if abs(logs["loss"]) > DIVERGENCE * max(abs(run.progress.first_loss), 1.0):
        raise SPMLError(f"the loss diverged: its mean over steps {first}..{step} is {logs['loss']:.3g}, over "
                        f"{DIVERGENCE:g} times the first step's {run.progress.first_loss:.3g} (or 1); lower optim.lr "
                        "(the checkpoints written before stay)")
    logs = {f"train/{name}": value for name, value in logs.items()}
    for name, group in zip(PARAM_GROUPS, run.optimizer.param_groups):
        logs[f"lr/{name}"] = group["lr"]
    # every process loads the same number of images a batch (Accelerate's even_batches): this rank's times N
    logs["speed/images_per_second"] = meter.images * run.accelerator.num_processes / seconds
    logs["speed/seconds_per_step"] = seconds / meter.optimiser_steps  # the last batch of an epoch always steps
    run.accelerator.log(logs, step=step)
    progress_bar.set_postfix(loss=f"{logs['train/loss']:.4f}", lr=f"{logs[f'lr/{PARAM_GROUPS[0]}']:.3g}",
                             refresh=False)


@torch.no_grad()
def evaluate(model, loader, accelerator, eval_logits=lambda output: output["logits"], thresholds=None,
             split="evaluate"):
    """Metrics on clean labels over the whole split, from every rank, padding dropped, and the mean binary
    cross-entropy of the logits against those labels ("bce": every method's loss on full labels, so that
    methods compare); with the scores, the labels and the verified mask (None when the labels are complete;
    else every metric, bce too, covers each class's verified entries only). A progress bar named `split`.

    eval_logits: the method's (Method.eval_logits), which BoostLU changes. thresholds: the export's
    per-class decision thresholds, at which CF1 and OF1 are also given (`CF1_val_thresholds`, ...).
    """
    model.eval()
    gathered = {}
    for batch in progress_bar(accelerator, loader, desc=split, leave=False):
        if len(batch["skipped"]):
            raise SPMLError(f"unreadable evaluation images (rows {batch['skipped'].tolist()}): "
                            "metrics would silently cover fewer images")
        with accelerator.autocast():
            batch_logits = eval_logits(model(batch["image"]))
        truth = {name: batch[name] for name in ("labels", "verified") if name in batch}
        for name, value in accelerator.gather_for_metrics({"logits": batch_logits.float(), **truth}).items():
            gathered.setdefault(name, []).append(value.cpu())
    # in float64: float32's sigmoid is exactly 1.0 above a logit of 16.6, and such ties would lower AP and
    # put a decision threshold at 0.99999994
    logits, labels = torch.cat(gathered["logits"]).double(), torch.cat(gathered["labels"])
    verified = torch.cat(gathered["verified"]) == 1 if "verified" in gathered else None
    if verified is None:
        bce = F.binary_cross_entropy_with_logits(logits, (labels == 1).double()).item()
    else:
        bce = F.binary_cross_entropy_with_logits(logits[verified], (labels[verified] == 1).double()).item()
        verified = verified.numpy()
    scores, labels = torch.sigmoid(logits).numpy(), labels.numpy()
    metrics = {**multilabel_metrics(scores, labels, verified=verified), "bce": bce}
    if thresholds is not None:
        metrics["CF1_val_thresholds"], metrics["OF1_val_thresholds"] = cf1_of1(scores, labels, thresholds, verified)
    return metrics, scores, labels, verified


def fit(run, train_loader, val_loader, steps_per_epoch, export_info, preview):
    """Epochs from where the progress stands: train, validate, keep the best, checkpoint."""
    accelerator, progress, config = run.accelerator, run.progress, run.config.train
    output_dir = Path(config.output_dir)
    last_epoch = progress.history[-1]["train"] if progress.history else {}  # a run resumed after its last epoch
    skipped = 0
    with progress_bar(accelerator, total=steps_per_epoch * config.epochs, initial=progress.global_step,
                      desc="train") as bar:  # closed before any error line
        while progress.epoch < config.epochs and not reached_max_steps(run) and not run.stop.stopping:
            epoch = progress.epoch
            train_loader.set_epoch(epoch)
            batches_done = progress.step_in_epoch * accelerator.gradient_accumulation_steps
            result = train_one_epoch(run, epoch, skip_first_batches(accelerator, train_loader, batches_done), bar)
            last_epoch, skipped = result.train, skipped + result.skipped
            accelerator.log({f"epoch/{name}": value for name, value in last_epoch.items()}, step=progress.global_step)
            if progress.step_in_epoch < steps_per_epoch:
                break  # stopped by train.max_steps or SIGTERM inside the epoch: no evaluation
            val_metrics, val_scores, val_labels, val_verified = evaluate(run.model, val_loader, accelerator,
                                                                         run.method.eval_logits, split="val")
            calibration = run.method.calibrate(run.model, val_loader)  # what the next epochs apply
            best_val_map = max(progress.best_val_map, val_metrics["mAP"])
            val_logs = {"val/mAP": val_metrics["mAP"], "val/best_mAP": best_val_map, "val/bce": val_metrics["bce"],
                        **{f"val/{name}": value for name, value in calibration.items()}}
            accelerator.log(val_logs, step=progress.global_step)
            log_pictures(run, preview)
            log_histograms(run, result.fn_scores)
            progress.history.append({"epoch": epoch, "val_mAP": val_metrics["mAP"], "val_bce": val_metrics["bce"],
                                     "train": last_epoch, "calibration": calibration,
                                     "histograms": {name: histogram(groups) for name, groups in result.fn_scores.items()}})
            say(f"epoch {epoch}: val mAP {val_metrics['mAP']:.2f}, val BCE {val_metrics['bce']:.4f}"
                + fn_score_line(last_epoch))
            if val_metrics["mAP"] > progress.best_val_map:
                progress.best_val_map, progress.best_epoch = val_metrics["mAP"], epoch
                # the decision thresholds travel with the weights they were chosen for
                thresholds = f1_thresholds(val_scores, val_labels, verified=val_verified).tolist()
                export_model(accelerator, run.model, {**export_info, "epoch": epoch, "val_mAP": val_metrics["mAP"],
                                                      "decision_thresholds": thresholds}, output_dir)
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            save_checkpoint(run)
    if progress.step_in_epoch:
        save_checkpoint(run)
    return last_epoch, skipped


def skip_first_batches(accelerator, loader, num_batches):
    """The loader past the batches a resumed epoch has done. A streamed split (data/streaming.py) skips them in its
    shard index, unread; Accelerate's skip would read and drop them."""
    own_skip = getattr(loader, "skip_first_batches", None)
    return own_skip(num_batches) if own_skip else accelerator.skip_first_batches(loader, num_batches)


def reached_max_steps(run):
    max_steps = run.config.train.max_steps
    return bool(max_steps) and run.progress.global_step >= max_steps


def test(run, test_loader, class_names, skipped, seconds, last_epoch):
    """The best epoch's weights on the test split: metrics.json, test scores, a printed line."""
    accelerator, output_dir = run.accelerator, Path(run.config.train.output_dir)
    if accelerator.is_main_process:
        settle_export(output_dir / EXPORT)  # a run killed while swapping exports, resumed after its best epoch
    accelerator.wait_for_everyone()
    weights_identical = weights_identical_across_ranks(run)  # the last step's, before the best epoch's are loaded
    network(accelerator, run.model).load_state_dict(load_file(str(output_dir / EXPORT / "model.safetensors")))
    thresholds = decision_thresholds(read_info(output_dir / EXPORT))
    test_metrics, test_scores, _, _ = evaluate(run.model, test_loader, accelerator, run.method.eval_logits,
                                               thresholds, "test")
    skipped = int(accelerator.reduce(torch.tensor(skipped, device=accelerator.device), reduction="sum"))  # all ranks
    summary = {"method": run.config.method.name, "best_epoch": run.progress.best_epoch,
               "best_val_mAP": run.progress.best_val_map, "test": test_metrics, "last_epoch_train": last_epoch,
               "epochs": run.progress.history,
               "skipped_images": skipped, "thresholds_identical_across_ranks": thresholds_identical_across_ranks(run),
               "weights_identical_across_ranks": weights_identical,
               "num_processes": accelerator.num_processes, "train_seconds": round(seconds, 1)}
    if accelerator.is_main_process:
        write_json_atomic(output_dir / "metrics.json", summary)
        scores = io.BytesIO()
        np.save(scores, test_scores)
        write_bytes_atomic(output_dir / "test_scores.npy", scores.getvalue())
        add_test_metrics(output_dir / EXPORT, test_metrics)
    accelerator.log({**{f"test/{name}": test_metrics[name] for name in ("mAP", "CF1", "OF1", "bce")},
                     **{f"test_AP/{name}": ap for name, ap in zip(class_names, test_metrics["per_class_AP"])}},
                    step=run.progress.global_step)
    say(results_table(class_names, test_metrics, "test"))
    say(f"test (best epoch {run.progress.best_epoch}): mAP {test_metrics['mAP']:.2f}  "
        f"CF1 {test_metrics['CF1']:.2f}  OF1 {test_metrics['OF1']:.2f}  (at the validation thresholds: "
        f"CF1 {test_metrics['CF1_val_thresholds']:.2f}  OF1 {test_metrics['OF1_val_thresholds']:.2f})"
        + verified_note(test_metrics) + (f"  ({skipped} unreadable training images skipped)" if skipped else ""))


def thresholds_identical_across_ranks(run):
    """Whether every rank holds rank 0's method buffers, bit for bit (None: the method has none)."""
    return identical_across_ranks(run.accelerator, list(run.method.buffers()))


def weights_identical_across_ranks(run):
    """Whether every rank holds rank 0's weights and BatchNorm statistics, bit for bit."""
    return identical_across_ranks(run.accelerator, list(network(run.accelerator, run.model).state_dict().values()))

