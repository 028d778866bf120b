"""Resume state (Accelerate's save_state) and the weights-only export."""
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors.torch import save_file

from .errors import SPMLError
from .files import write_text_atomic

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
    history: list = field(default_factory=list)  # one record per finished epoch: metrics.json's "epochs"

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, state):
        for name, value in state.items():
            setattr(self, name, value)


def save_checkpoint(accelerator, output_dir, progress, keep):
    """save_state into a temporary folder, renamed when complete; keep the newest `keep`."""
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"step-{progress.global_step:09d}"
    partial = root / (final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in sorted(root.glob("step-?????????"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(resume, output_dir):
    """The checkpoint to resume from: None, the newest one in output_dir ('auto'), or a path."""
    if not resume:
        return None
    if resume == "auto":
        found = sorted((Path(output_dir) / CHECKPOINTS).glob("step-?????????"))
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise SPMLError(f"train.resume: checkpoint directory {path} not found")
    return path


def export_model(accelerator, model, export_info, output_dir):
    """Weights (safetensors) + config.json, what inference needs; written atomically."""
    if not accelerator.is_main_process:
        return
    target = Path(output_dir) / EXPORT
    partial = target.with_name(EXPORT + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    state = {name: tensor.detach().cpu().contiguous()
             for name, tensor in accelerator.unwrap_model(model).state_dict().items()}
    save_file(state, str(partial / "model.safetensors"))
    (partial / "config.json").write_text(json.dumps(export_info, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def write_json_atomic(path, payload):
    """Strict JSON: a nan (an AUROC without false negatives, say) is written as null."""
    write_text_atomic(path, json.dumps(without_nan(payload), indent=2, allow_nan=False) + "\n")


def without_nan(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value
