"""Use an exported model: `load_exported(dir)` then `predict_probabilities(model, images)`.

    from ignore.inference import load_exported, predict_probabilities
    model = load_exported("runs/demo/export")
    probabilities = predict_probabilities(model, [PIL.Image.open("a.jpg")])  # (1, C)
    dict(zip(model.class_names, probabilities[0].tolist()))
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .data.images import to_rgb
from .data.views import eval_view
from .errors import SPMLError
from .models.build import build_model, model_config_from_export
from .models.cam_boost import export_logits


def load_exported(export_dir, device="cpu"):
    """The exported network in eval mode, with `class_names` and `export_info` attached."""
    export_dir = Path(export_dir)
    for name in ("model.safetensors", "config.json"):
        if not (export_dir / name).is_file():
            raise SPMLError(f"{export_dir / name}: not found (an export holds model.safetensors and config.json)")
    info = json.loads((export_dir / "config.json").read_text())
    model = build_model(model_config_from_export(info), len(info["class_names"]))
    model.load_state_dict(load_file(str(export_dir / "model.safetensors")))
    model.class_names = info["class_names"]
    model.export_info = info
    return model.to(device).eval()


@torch.no_grad()
def predict_probabilities(model, images):
    """Probabilities (N, C) for a list of PIL images (any mode, see `to_rgb`), preprocessed as in evaluation."""
    info = model.export_info
    transform = eval_view(info["image_size"], {"mean": info["mean"], "std": info["std"]})
    device = next(model.parameters()).device
    batch = torch.stack([transform(to_rgb(image)) for image in images]).to(device)
    return torch.sigmoid(export_logits(model(batch), info).float()).cpu()
