"""Resume state (Accelerate's save_state) and the weights-only export."""
import os
import pickle
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.utils.serialization
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..config import save_config
from ..errors import SPMLError
from ..files import whole_or_nothing
from ..losses.row_state import is_mapped
from ..models.export import read_info, write_export
from .resume_settings import CHECKPOINT_CONFIG

CHECKPOINTS = "checkpoints"
EXPORT = "export"


@dataclass
class Progress:
    """Where training stands; registered for checkpointing so a resume continues from here."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimiser steps already taken in `epoch`
    global_step: int = 0
    best_val_map: float = -1.0
    best_epoch: int = -1
    global_batch: int = 0  # images an optimiser step: a resumed run must keep it
    first_loss: float = None  # the first step's loss (mean of the processes): the divergence guard's reference
    history: list = field(default_factory=list)  # one record per finished epoch: metrics.json's "epochs"
    # a streamed train split: {"shards": its index's fingerprint, "num_processes"}. With step_in_epoch, what each
    # process has consumed of its shards; a resume inside the epoch needs the same shards and processes
    stream: dict = field(default_factory=dict)

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, state):
        for name, value in state.items():
            setattr(self, name, value)


def save_checkpoint(run):
    """save_state and the config into a temporary folder, renamed when complete; keep the newest `keep`.

    Non-finite weights stop the run before anything is written or pruned: the newest
    checkpoint on disk is always one that resumes.
    """
    accelerator, config, progress = run.accelerator, run.config.train, run.progress
    require_finite(run, f"at step {progress.global_step}, not checkpointed")
    final = checkpoint_dir(config.output_dir, progress.global_step)
    root = final.parent
    partial = root / (final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    previous = sorted(root.glob("step-?????????"))
    kept = f"the newest checkpoint is still {previous[-1]}" if previous else "no checkpoint is written yet"
    with whole_or_nothing(final, partial, kept):  # a full disk: stop in one line, the last good checkpoint kept
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_config(run.config, partial / CHECKPOINT_CONFIG)  # what a resume compares its own settings with
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in sorted(root.glob("step-?????????"))[:-config.keep_checkpoints]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path):
    """load_state, the registered objects' tensors (the method's per-image tables) mapped from the checkpoint's files
    rather than read whole into every process's memory: each is copied into its buffer, a row table into its
    mapped file. The optimiser's state is read as before (it keeps the tensors it loads)."""
    config = torch.utils.serialization.config.load
    mapped_before, config.mmap = config.mmap, True
    try:
        accelerator.load_state(str(path), load_kwargs={"mmap": False})
    finally:
        config.mmap = mapped_before


def checkpoint_dir(output_dir, step):
    return Path(output_dir) / CHECKPOINTS / f"step-{step:09d}"


def network(accelerator, model):
    """The model without the DDP and torch.compile wrappers, whose state dict has the plain
    names (`trunk.layer1.0.conv1.weight`, never `module.` or `_orig_mod.`) that an export holds."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def require_finite(run, when):
    """Stop the run if a weight, running statistic or threshold is inf or NaN on any rank.

    One host synchronisation: called at log intervals and before each checkpoint, not per step.
    """
    # a mapped per-image table is left out: reading it whole on every process would cost more than the steps
    # between two checks, and its rows come from the steps' logits and gradients, whose loss is checked
    named = [(name, tensor) for module in (network(run.accelerator, run.model), run.method)
             for name, tensor in module.state_dict().items() if tensor.is_floating_point() and not is_mapped(tensor)]
    not_finite = torch.stack([~torch.isfinite(tensor).all() for _, tensor in named]).float()
    on_any_rank = run.accelerator.reduce(not_finite, reduction="sum").tolist()
    bad = [name for (name, _), count in zip(named, on_any_rank) if count]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SPMLError(f"non-finite weights or statistics {when}: {', '.join(bad[:3])}{more}")


def resolve_resume(resume, output_dir, say, custom_objects=0):
    """The checkpoint to resume from: None, the newest intact one in output_dir ('auto'), or a path.

    `say` prints a line (on the main process) for each damaged checkpoint that 'auto' passes over;
    `custom_objects`: how many objects the run registers for checkpointing (each a file).
    """
    if not resume:
        return None
    if resume == "auto":
        found = sorted((Path(output_dir) / CHECKPOINTS).glob("step-?????????"))
        for path in reversed(found):
            damage = checkpoint_damage(path, custom_objects)
            if damage is None:
                return path
            say(f"checkpoint {path} is damaged ({damage}); trying the one before")
        if found:
            raise SPMLError(f"train.resume=auto: all {len(found)} checkpoints in {found[0].parent} are damaged")
        return None
    path = Path(resume)
    if not path.is_dir():
        raise SPMLError(f"train.resume: checkpoint directory {path} not found")
    damage = checkpoint_damage(path, custom_objects)
    if damage is not None:
        raise SPMLError(f"train.resume: checkpoint {path} is damaged ({damage})")
    return path


def checkpoint_damage(path, custom_objects=0):
    """Why the checkpoint at `path` cannot be resumed (its first file that does not decode), or None.

    Each file is read the way Accelerate's load_state reads it, before load_state runs: a
    failure half way through load_state would leave a mix of two checkpoints in memory.
    """
    custom = [f"custom_checkpoint_{index}.pkl" for index in range(custom_objects)]
    for required in ["model.safetensors", "optimizer.bin"] + custom:
        if not (path / required).is_file():
            return f"{required} is missing"
    for file in sorted(path.iterdir()):
        if file.name == CHECKPOINT_CONFIG:
            continue  # not Accelerate's: read by resume_settings
        try:
            if file.suffix == ".safetensors":
                load_file(str(file))
            else:  # a zip archive (torch.save's) mapped: its tensors (per-image tables) are not read whole
                torch.load(file, map_location="cpu", weights_only=False, mmap=is_zip_archive(file))
        except (SafetensorError, OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
            return f"{file.name}: {str(error).split('. ')[0]}"  # torch's zip errors run to five sentences
    return None


def is_zip_archive(file):
    with open(file, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def require_same_weights(path, network):
    """Stop with one line unless the checkpoint at `path` holds exactly `network`'s weight names
    (another model setting, or a checkpoint of a version before the trunks took torchvision's names)."""
    with safe_open(str(path / "model.safetensors"), framework="pt") as weights:
        saved = set(weights.keys())
    own = set(network.state_dict())
    if saved != own:
        raise SPMLError(f"train.resume: checkpoint {path} holds the weights of another model (missing "
                        f"{sorted(own - saved)[:3]}, unexpected {sorted(saved - own)[:3]}); resume with the "
                        "model settings and trainer version that wrote it, or start afresh")


def adopt_best_export(accelerator, resume_from, output_dir, progress, say):
    """A checkpoint of another run folder, resumed here: the best epoch so far is exported over there. Its run's
    export is copied here when it still holds that epoch; where the run has since exported a later epoch (or
    none is left), the best epoch is chosen again among the epochs from here, and the run says so."""
    target, source = Path(output_dir) / EXPORT, Path(resume_from).parent.parent / EXPORT
    if progress.best_epoch < 0 or source.resolve() == target.resolve():
        return  # nothing exported yet, or its own folder's export (test() settles a swap a kill left half done)
    # The main process looks and every rank follows: it alone copies into `target`, so a rank that looked after
    # the copy would skip the barrier below and hang the launch.
    decision = [export_decision(target, source, progress.best_epoch) if accelerator.is_main_process else None]
    (decision,) = broadcast_object_list(decision)
    if decision == "kept":
        return
    if decision == "copy":
        if accelerator.is_main_process:
            copying = target.with_name(target.name + ".copying")
            shutil.rmtree(copying, ignore_errors=True)
            shutil.copytree(source, copying)
            os.replace(copying, target)
        accelerator.wait_for_everyone()
        say(f"the best epoch so far ({progress.best_epoch}): its export copied from {source}")
        return
    say(f"the best epoch so far ({progress.best_epoch}, val mAP {progress.best_val_map:.2f}) has no export beside "
        f"{resume_from} any more; the best epoch is chosen among the epochs from here")
    progress.best_epoch, progress.best_val_map = -1, -1.0


def export_decision(target, source, best_epoch):
    """"kept" where this folder has an export, "copy" where the source run's export holds the best epoch, else
    "choose again"."""
    if target.is_dir():
        return "kept"
    if (source / "config.json").is_file() and read_info(source).get("epoch") == best_epoch:
        return "copy"
    return "choose again"


def export_model(accelerator, model, export_info, output_dir):
    """The network's weights, the config and a model card in output_dir/export (ignore/export.py)."""
    if accelerator.is_main_process:
        write_export(Path(output_dir) / EXPORT, network(accelerator, model), export_info)
