"""Train a single-positive multi-label classifier.

    accelerate launch train.py [--config FILE.yaml] [key=value ...]
    python train.py                      # one process: IGNORE on the built-in demo data
"""
import argparse
import dataclasses
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ignore.checkpoint import (EXPORT, Progress, export_model, network, require_same_weights, resolve_resume,
                               save_checkpoint, write_json_atomic)
from ignore.config import config_help, flattened, load_config, save_config, scaled_lr
from ignore.cpu_threads import use_all_cores_if_launcher_chose_one
from ignore.data.loading import build_loaders, load_spml_data, preview_batch, training_rows
from ignore.detection import histogram
from ignore.engine import Run, evaluate, train_one_epoch
from ignore.errors import SPMLError, exit_on_error
from ignore.export import add_test_metrics
from ignore.files import make_output_dir
from ignore.losses.registry import build_method
from ignore.metrics import results_table
from ignore.models.build import build_model, model_settings
from ignore.models.sync_batchnorm import synchronise_batchnorm
from ignore.optim import build_optimizer, build_scheduler
from ignore.precision import resolve_mixed_precision
from ignore.report import write_report
from ignore.tracking import SCALARS, trackers


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, epilog=config_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a YAML file of settings (see README)")
    parser.add_argument("overrides", nargs="*", help="dotted settings, e.g. method.warm_up=2 train.epochs=5")
    return parser.parse_intermixed_args(argv)  # --config before, between or after the overrides


@exit_on_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    output_dir = Path(config.train.output_dir)
    make_output_dir(output_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=trackers(config.train.tracker, output_dir),
                              mixed_precision=resolve_mixed_precision(config.train.mixed_precision),
                              project_dir=str(output_dir), step_scheduler_with_optimizer=False)
    use_all_cores_if_launcher_chose_one(accelerator)
    set_seed(config.train.seed)
    data = load_spml_data(config.data, accelerator)
    num_classes = len(data.class_names)
    model = build_model(config.model, num_classes)
    if config.model.sync_batchnorm and accelerator.num_processes > 1:
        model = synchronise_batchnorm(model, accelerator.device)
    normalisation = model.normalisation
    global_batch = config.train.batch_size * accelerator.num_processes * accelerator.gradient_accumulation_steps
    lr = scaled_lr(config.optim, global_batch)
    train_labels = np.asarray(training_rows(data, config.data)["labels"], dtype=np.float64)
    method = build_method(config.method, num_classes, accelerator, seed=config.train.seed, normalisation=normalisation,
                          num_train_rows=len(train_labels), positives_per_image=float(train_labels.sum(1).mean()),
                          lr=lr, epochs=config.train.epochs)
    train_loader, val_loader, test_loader = build_loaders(data, config.data, method.views, config.train.batch_size,
                                                          config.train.seed, normalisation)
    optimizer = build_optimizer(model, config.optim, config.model.head_lr_multiplier, lr)
    model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise SPMLError(f"the train split has fewer images than one global batch ({global_batch})")
    scheduler = build_scheduler(optimizer, config.optim, steps_per_epoch * config.train.epochs)
    method.to(accelerator.device)
    run = Run(config, accelerator, model, method, optimizer, scheduler, Progress())
    checkpointed = (scheduler, method, run.progress)
    accelerator.register_for_checkpointing(*checkpointed)

    resume_from = resolve_resume(config.train.resume, output_dir, accelerator.print, len(checkpointed))
    if resume_from is not None:
        require_same_weights(resume_from, network(accelerator, model))
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from}: epoch {run.progress.epoch}, step {run.progress.global_step}")
    if accelerator.is_main_process:
        save_config(config, output_dir / "config.yaml")
        if resume_from is None:
            (output_dir / SCALARS).unlink(missing_ok=True)  # a fresh run's log starts empty
    accelerator.init_trackers("tensorboard" if config.train.tracker == "tensorboard" else output_dir.name,
                              config=flattened(config))
    accelerator.print(f"{len(train_loader.dataset)} train images, {num_classes} classes, method {config.method.name}, "
                      f"{accelerator.num_processes} process(es), global batch {global_batch}, lr {lr:g}")
    export_info = {"class_names": data.class_names, "model": model_settings(config.model),
                   "image_size": config.data.image_size,
                   **normalisation, "method": config.method.name, "source": data.meta["source"],
                   "training": {"command": training_command(argv, accelerator.num_processes),
                                "num_processes": accelerator.num_processes, "config": dataclasses.asdict(config)},
                   **method.export_settings()}
    preview = send_to_device(preview_batch(data, config.data, normalisation), accelerator.device)
    started = time.time()
    last_epoch, skipped = fit(run, train_loader, val_loader, steps_per_epoch, export_info, preview)
    if run.progress.best_epoch < 0:
        accelerator.print(f"stopped at step {run.progress.global_step} before the first evaluation; no test run")
    else:
        test(run, test_loader, data.class_names, skipped, time.time() - started, last_epoch)
        if accelerator.is_main_process:  # the best epoch's weights, which test() loaded
            write_report(output_dir, data.class_names, run.method.pictures(run.model, preview))
    accelerator.end_training()


def training_command(argv, num_processes):
    """How this run was started, for the model card (the merged config goes beside it)."""
    launcher = "python" if num_processes == 1 else f"accelerate launch --num_processes {num_processes}"
    return f"{launcher} train.py {shlex.join(argv)}".rstrip()


def fit(run, train_loader, val_loader, steps_per_epoch, export_info, preview):
    """Epochs from where the progress stands: train, validate, keep the best, checkpoint."""
    accelerator, progress, config = run.accelerator, run.progress, run.config.train
    output_dir = Path(config.output_dir)
    last_epoch = progress.history[-1]["train"] if progress.history else {}  # a run resumed after its last epoch
    skipped = 0
    with tqdm(total=steps_per_epoch * config.epochs, initial=progress.global_step,
              disable=not accelerator.is_main_process, desc="train") as bar:  # closed before any error line
        while progress.epoch < config.epochs and not reached_max_steps(run):
            epoch = progress.epoch
            train_loader.set_epoch(epoch)
            batches_done = progress.step_in_epoch * accelerator.gradient_accumulation_steps
            result = train_one_epoch(run, epoch, accelerator.skip_first_batches(train_loader, batches_done), bar)
            last_epoch, skipped = result.train, skipped + result.skipped
            accelerator.log({f"epoch/{name}": value for name, value in last_epoch.items()}, step=progress.global_step)
            if progress.step_in_epoch < steps_per_epoch:
                break  # stopped by train.max_steps inside the epoch: no evaluation
            val_metrics, _ = evaluate(run.model, val_loader, accelerator, run.method.eval_logits)
            accelerator.log({"val/mAP": val_metrics["mAP"]}, step=progress.global_step)
            log_pictures(run, preview)
            log_histograms(run, result.detection)
            progress.history.append({"epoch": epoch, "val_mAP": val_metrics["mAP"], "train": last_epoch,
                                     "histograms": {name: histogram(groups) for name, groups in result.detection.items()}})
            accelerator.print(f"epoch {epoch}: val mAP {val_metrics['mAP']:.2f}" + detection_line(last_epoch))
            if val_metrics["mAP"] > progress.best_val_map:
                progress.best_val_map, progress.best_epoch = val_metrics["mAP"], epoch
                export_model(accelerator, run.model, {**export_info, "epoch": epoch, "val_mAP": val_metrics["mAP"]},
                             output_dir)
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            save_checkpoint(run)
    if progress.step_in_epoch:
        save_checkpoint(run)
    return last_epoch, skipped


def reached_max_steps(run):
    max_steps = run.config.train.max_steps
    return bool(max_steps) and run.progress.global_step >= max_steps


def log_pictures(run, preview):
    if not run.accelerator.is_main_process or run.config.train.tracker != "tensorboard":
        return
    pictures = run.method.pictures(run.model, preview)
    if pictures:
        tracker = run.accelerator.get_tracker("tensorboard")
        tracker.log_images({tag: image[None] for tag, image in pictures.items()}, step=run.progress.global_step)


def log_histograms(run, detection):
    """Scores of the true false negatives and of the true negatives, one histogram each."""
    if not run.accelerator.is_main_process or not detection or run.config.train.tracker != "tensorboard":
        return
    writer = run.accelerator.get_tracker("tensorboard", unwrap=True)
    for name, groups in detection.items():
        for group, values in groups.items():
            values = values[np.isfinite(values)]  # a gated-out label scores -inf
            if len(values):
                writer.add_histogram(f"detection/{name}_{group}", values, run.progress.global_step)


def detection_line(train_summary):
    """', gap AUROC 0.71 (with LAT 0.74, logit 0.80)' when the method scored false negatives."""
    if "gap_auroc" not in train_summary:
        return ""
    return (f", gap AUROC {train_summary['gap_auroc']:.3f} (with LAT {train_summary['gap_lat_auroc']:.3f}, "
            f"drop {train_summary['drop_auroc']:.3f}, logit {train_summary['logit_auroc']:.3f})")


def test(run, test_loader, class_names, skipped, seconds, last_epoch):
    """The best epoch's weights on the test split: metrics.json, test scores, a printed line."""
    accelerator, output_dir = run.accelerator, Path(run.config.train.output_dir)
    accelerator.wait_for_everyone()
    network(accelerator, run.model).load_state_dict(load_file(str(output_dir / EXPORT / "model.safetensors")))
    test_metrics, test_scores = evaluate(run.model, test_loader, accelerator, run.method.eval_logits)
    skipped = int(accelerator.reduce(torch.tensor(skipped, device=accelerator.device), reduction="sum"))  # all ranks
    summary = {"method": run.config.method.name, "best_epoch": run.progress.best_epoch,
               "best_val_mAP": run.progress.best_val_map, "test": test_metrics, "last_epoch_train": last_epoch,
               "epochs": run.progress.history,
               "skipped_images": skipped, "thresholds_identical_across_ranks": thresholds_identical_across_ranks(run),
               "num_processes": accelerator.num_processes, "train_seconds": round(seconds, 1)}
    if accelerator.is_main_process:
        write_json_atomic(output_dir / "metrics.json", summary)
        np.save(output_dir / "test_scores.npy", test_scores)
        add_test_metrics(output_dir / EXPORT, test_metrics)
    accelerator.log({f"test/{name}": test_metrics[name] for name in ("mAP", "CF1", "OF1")},
                    step=run.progress.global_step)
    accelerator.print(results_table(class_names, test_metrics, "test"))
    accelerator.print(f"test (best epoch {run.progress.best_epoch}): mAP {test_metrics['mAP']:.2f}  "
                      f"CF1 {test_metrics['CF1']:.2f}  OF1 {test_metrics['OF1']:.2f}"
                      + (f"  ({skipped} unreadable training images skipped)" if skipped else ""))


def thresholds_identical_across_ranks(run):
    """Gather every rank's method buffers and compare them bit for bit (None: no buffers)."""
    buffers = [buffer.detach().float().flatten() for buffer in run.method.buffers()]
    if not buffers:
        return None
    mine = torch.cat(buffers)
    every_rank = run.accelerator.gather(mine[None]).view(run.accelerator.num_processes, -1)
    return bool((every_rank == every_rank[0]).all())


if __name__ == "__main__":
    main()
