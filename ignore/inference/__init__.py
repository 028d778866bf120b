"""Use an exported model: `load_export(dir)` then `predict_probabilities(model, images)`.

    from ignore.inference import load_export, predict_probabilities
    model = load_export("runs/demo/export")          # or a Hub repository, USER/NAME
    probabilities = predict_probabilities(model, [PIL.Image.open("a.jpg")])  # (1, C)
    dict(zip(model.class_names, probabilities[0].tolist()))
"""
import torch

from ..data.images import to_rgb
from ..data.views import eval_view
from ..models.export import load_export

__all__ = ["load_export", "predict_probabilities", "preprocessing"]


def preprocessing(model):
    """The evaluation view of the run that trained `model`: its image size and normalisation."""
    info = model.export_info
    return eval_view(info["image_size"], {"mean": info["mean"], "std": info["std"]})


@torch.no_grad()
def predict_probabilities(model, images):
    """Probabilities (N, C) for a list of PIL images (any mode, see `to_rgb`), preprocessed as in evaluation."""
    transform = preprocessing(model)
    device = next(model.parameters()).device
    batch = torch.stack([transform(to_rgb(image)) for image in images]).to(device)
    return torch.sigmoid(model(batch)["logits"].float()).cpu()
