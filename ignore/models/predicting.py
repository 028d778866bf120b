"""From images to labels with a classifier that carries its export's config.json as `export_info`."""
from pathlib import Path

import torch

from ..data.images import open_rgb, to_rgb
from ..data.views import eval_view
from ..errors import SPMLError

# What an export written before decision thresholds were stored falls back to: SPML scores are not
# calibrated (docs/outputs.md), so 0.5 is only a guess there.
FALLBACK_THRESHOLD = 0.5


def decision_thresholds(info):
    """Per class, the probability at or above which it is predicted: the export's `decision_thresholds`
    (chosen on the validation split), or FALLBACK_THRESHOLD for every class in an export without them."""
    stored = info.get("decision_thresholds")
    if stored is None:
        return [FALLBACK_THRESHOLD] * len(info["class_names"])
    if len(stored) != len(info["class_names"]):
        raise SPMLError(f"config.json: {len(stored)} decision_thresholds for {len(info['class_names'])} classes")
    return [float(value) for value in stored]


def preprocessing(model):
    """The evaluation view of the run that trained `model`: its image size and normalisation."""
    info = model.export_info
    return eval_view(info["image_size"], {"mean": info["mean"], "std": info["std"]})


@torch.no_grad()
def predict_probabilities(model, images):
    """Probabilities (N, C), float64, for a list of PIL images (any mode, see `to_rgb`) or image paths,
    preprocessed as in evaluation."""
    transform = preprocessing(model)
    device = next(model.parameters()).device
    rgb = [open_rgb(Path(), image) if isinstance(image, (str, Path)) else to_rgb(image) for image in images]
    batch = torch.stack([transform(image) for image in rgb]).to(device)
    return torch.sigmoid(model(batch)["logits"].double()).cpu()  # float64: no 1.0 below a logit of 36


def labels_at(probabilities, class_names, thresholds):
    """[(class, probability)] of one image at or above each class's threshold, most probable first."""
    ranked = sorted(zip(class_names, probabilities, thresholds), key=lambda triple: -triple[1])
    return [(name, probability) for name, probability, threshold in ranked if probability >= threshold]
