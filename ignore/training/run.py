"""One training run from start to end: what `ignore-train` (train.py) runs once its config is parsed."""
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

from ..config import save_config, scaled_lr
from ..data.loading import build_loaders, load_spml_data, prepared_train_loader, preview_batch, training_rows
from ..errors import SPMLError
from ..files import make_output_dir
from ..losses.registry import build_method
from ..losses.teacher import TrainingImages
from ..models.build import build_model, model_settings
from ..models.sync_batchnorm import synchronise_batchnorm
from .checkpoint import (Progress, adopt_best_export, checkpoint_dir, load_checkpoint, network, require_same_weights,
                         resolve_resume)
from .console import run_log, say
from .cpu_threads import use_all_cores_if_launcher_chose_one
from .loop import Run, fit, test
from .optim import build_optimizer, build_scheduler
from .preemption import PREEMPTED, StopOnSigterm
from .precision import resolve_mixed_precision
from .report import write_report
from .resume_settings import require_same_global_batch, require_same_settings, require_same_stream
from .run_folder import claimed, clear_previous_run, require_own_folder
from .tracking import SCALARS, end_trackers, start_trackers, trackers


def train(config, argv):
    """One run from start to end, in a folder that holds no other run and that no other run uses meanwhile.

    argv: the command line, for the model card."""
    output_dir = Path(config.train.output_dir)
    log_with = trackers(config.train.tracker, output_dir)  # a tracker whose package is missing stops before any folder
    require_own_folder(config.train)
    make_output_dir(output_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=log_with,
                              mixed_precision=resolve_mixed_precision(config.train.mixed_precision),
                              project_dir=str(output_dir), step_scheduler_with_optimizer=False)
    with claimed(output_dir, accelerator.is_main_process):
        if accelerator.is_main_process:
            require_own_folder(config.train)  # again, now that no other run can: one may have ended into it since
            if config.train.overwrite:
                clear_previous_run(output_dir)
        accelerator.wait_for_everyone()  # the other ranks go on once the folder is this run's
        with run_log(output_dir, accelerator, fresh=not config.train.resume):
            train_in_own_folder(config, argv, accelerator)


def train_in_own_folder(config, argv, accelerator):
    """Wire data, model and method into Accelerate, then fit and test; everything it says goes into train.log."""
    output_dir = Path(config.train.output_dir)
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
    train_images = TrainingImages(data.splits["train"], len(train_labels), data.image_root, data.folder,
                                  data.class_names)
    method = build_method(config.method, num_classes, accelerator, seed=config.train.seed, normalisation=normalisation,
                          num_train_rows=len(train_labels), positives_per_image=float(train_labels.sum(1).mean()),
                          lr=lr, epochs=config.train.epochs, train_images=train_images,
                          row_state_dir=config.train.row_state_dir)
    train_loader, val_loader, test_loader = build_loaders(data, config.data, method.views, config.train.batch_size,
                                                          config.train.seed, normalisation, accelerator)
    optimizer = build_optimizer(model, config.optim, config.model.head_lr_multiplier, lr)
    model, optimizer, val_loader, test_loader = accelerator.prepare(model, optimizer, val_loader, test_loader)
    train_loader = prepared_train_loader(accelerator, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise SPMLError(f"the train split has fewer images than one global batch ({global_batch})")
    scheduler = build_scheduler(optimizer, config.optim, steps_per_epoch * config.train.epochs)
    method.to(accelerator.device)
    run = Run(config, accelerator, model, method, optimizer, scheduler, Progress(global_batch=global_batch),
              StopOnSigterm(accelerator))
    stream = {} if data.train_shards is None else {"shards": data.train_shards.fingerprint,
                                                   "num_processes": accelerator.num_processes}
    checkpointed = (scheduler, method, run.progress)
    accelerator.register_for_checkpointing(*checkpointed)

    resume_from = resolve_resume(config.train.resume, output_dir, say, len(checkpointed))
    if resume_from is not None:
        require_same_settings(resume_from, config)
        require_same_weights(resume_from, network(accelerator, model))
        load_checkpoint(accelerator, resume_from)
        require_same_global_batch(resume_from, run.progress.global_batch, global_batch)
        require_same_stream(resume_from, run.progress.stream, stream, run.progress.step_in_epoch)
        say(f"resumed from {resume_from}: epoch {run.progress.epoch}, step {run.progress.global_step}")
        adopt_best_export(accelerator, resume_from, output_dir, run.progress, say)
    run.progress.stream = stream
    if accelerator.is_main_process:
        save_config(config, output_dir / "config.yaml")
        if resume_from is None:
            (output_dir / SCALARS).unlink(missing_ok=True)  # a fresh run's log starts empty
    command = training_command(argv, accelerator.num_processes)
    start_trackers(accelerator, config, command, run.progress.global_step)
    say(f"{len(train_loader.dataset)} train images, {num_classes} classes, method {config.method.name}, "
        f"{accelerator.num_processes} process(es), global batch {global_batch}, lr {lr:g}")
    if data.train_shards is not None:
        say(train_loader.describe())
    export_info = {"class_names": data.class_names, "model": model_settings(config.model),
                   "image_size": config.data.image_size,
                   **normalisation, "method": config.method.name, "source": data.meta["source"],
                   "training": {"command": command,
                                "num_processes": accelerator.num_processes, "config": dataclasses.asdict(config)},
                   **method.export_settings()}
    preview = send_to_device(preview_batch(data, config.data, normalisation), accelerator.device)
    started = time.time()
    with run.stop:
        last_epoch, skipped = fit(run, train_loader, val_loader, steps_per_epoch, export_info, preview)
    if run.stop.stopping:
        say(f"stopped by SIGTERM at step {run.progress.global_step}: checkpoint "
            f"{checkpoint_dir(output_dir, run.progress.global_step)}; continue with train.resume=auto")
        accelerator.end_training()
        sys.exit(PREEMPTED)
    if run.progress.best_epoch < 0:
        say(f"stopped at step {run.progress.global_step} before the first evaluation; no test run")
    else:
        test(run, test_loader, data.class_names, skipped, time.time() - started, last_epoch)
        if accelerator.is_main_process:  # the best epoch's weights, which test() loaded
            write_report(output_dir, data.class_names, run.method.pictures(run.model, preview))
    end_trackers(accelerator, config, run.progress.global_step)


def training_command(argv, num_processes):
    """How this run was started, for the model card (the merged config goes beside it)."""
    if num_processes == 1:
        return f"ignore-train {shlex.join(argv)}".rstrip()
    return f"accelerate launch --num_processes {num_processes} -m ignore.train {shlex.join(argv)}".rstrip()
