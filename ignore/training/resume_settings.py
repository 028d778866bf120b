"""A resumed run continues the run its checkpoint holds: the same settings, but for those that may change.

Each checkpoint holds the merged config it was written with (config.yaml beside Accelerate's files); one
written before checkpoints held it falls back to its run folder's config.yaml.
"""
from pathlib import Path

import yaml

from ..config import flatten, flattened
from ..errors import SPMLError

CHECKPOINT_CONFIG = "config.yaml"
# How long and how often (epochs, step limit, checkpoints, logs), where things go (tracker, folders), how the
# images are loaded, and the per-process batch (with the process count: the global batch must stay, checked
# on the checkpoint's progress). Anything else would silently change the run, or fail inside load_state.
MAY_CHANGE = ("train.epochs", "train.max_steps", "train.resume", "train.overwrite", "train.checkpoint_every_steps",
              "train.keep_checkpoints", "train.log_every", "train.tracker", "train.output_dir", "train.batch_size",
              "train.row_state_dir",
              "data.num_workers", "data.image_root")


def saved_settings(checkpoint):
    """{dotted key: value} of the config the checkpoint was written with; None when neither file is there."""
    checkpoint = Path(checkpoint)
    for path in (checkpoint / CHECKPOINT_CONFIG, checkpoint.parent.parent / CHECKPOINT_CONFIG):
        if path.is_file():
            try:
                return dict(flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
            except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as error:
                raise SPMLError(f"train.resume: {path} is not a config ({str(error).splitlines()[0]})") from None
    return None


def require_same_settings(checkpoint, config):
    """Stop with one line naming every setting that differs from the checkpoint's and may not change."""
    saved = saved_settings(checkpoint)
    if saved is None:
        return
    own = flattened(config)
    changed = [f"{key} {saved[key]!r} -> {value!r}" for key, value in own.items()
               if key in saved and key not in MAY_CHANGE and saved[key] != value]
    if changed:
        raise SPMLError(f"train.resume: checkpoint {checkpoint} was trained with other settings: {', '.join(changed)}; "
                        "resume with its settings (docs/configuration.md lists those that may change) or start a "
                        "fresh run")
    old_epochs = saved.get("train.epochs", config.train.epochs)
    if config.optim.scheduler == "onecycle" and old_epochs != config.train.epochs:
        raise SPMLError(f"train.resume: train.epochs {old_epochs} -> {config.train.epochs} with "
                        f"optim.scheduler=onecycle: the one-cycle schedule is laid out over the run's first total of "
                        f"steps and cannot be stretched; resume with train.epochs={old_epochs}")


def require_same_global_batch(checkpoint, saved_global_batch, global_batch):
    """The per-process batch may change with the process count, the global batch (the learning rate, the
    steps of an epoch) may not. A checkpoint written before progress recorded it leaves this run's there."""
    if saved_global_batch != global_batch:
        raise SPMLError(f"train.resume: checkpoint {checkpoint} was trained with a global batch of "
                        f"{saved_global_batch}, this run's is {global_batch} (train.batch_size x processes x "
                        "gradient accumulation); keep the global batch, or start a fresh run")


def require_same_stream(checkpoint, saved_stream, stream, step_in_epoch):
    """A streamed epoch stopped part way continues only over the same shards read by as many processes: each
    process skips what it consumed of its own shards. A checkpoint at the end of an epoch resumes with any."""
    if not step_in_epoch or saved_stream == stream:
        return
    if saved_stream.get("shards") != stream.get("shards"):
        raise SPMLError(f"train.resume: checkpoint {checkpoint} stopped inside an epoch streamed from other shards "
                        "(data.train_shards was written again since); resume from a checkpoint at the end of an "
                        "epoch, or start a fresh run")
    raise SPMLError(f"train.resume: checkpoint {checkpoint} stopped inside an epoch streamed by "
                    f"{saved_stream['num_processes']} process(es), this run has {stream['num_processes']}: each "
                    f"process reads its own shards, so finish that epoch with {saved_stream['num_processes']}")
