"""A frozen ImageNet classifier as a teacher: torchvision's MobileNetV2 (IMAGENET1K_V1, from TORCH_HOME like
model.pretrained), its 1000 class probabilities added up into the dataset's classes by a map the user gives.

The map (method.teacher_class_map) is a JSON object {class name: [ImageNet class indices]}; a class it leaves
out scores 0. A class's score is the softmax probability that the image's ImageNet class is one of its indices:
softmax classes exclude each other, so two objects of an image share the mass (a weak multi-label teacher, but
one that runs offline).
"""
import hashlib
import json
from pathlib import Path

import torch
import torchvision

from ..errors import SPMLError
from .backbones import load_torchvision_network

IMAGENET_CLASSES = 1000


def read_class_map(path, class_names):
    """(1000, C) 0/1 float matrix from the JSON file, and its content's short hash; one line for any problem."""
    if not path:
        raise SPMLError("method.teacher=imagenet_mobilenet_v2 needs method.teacher_class_map, a JSON file "
                        "{class name: [ImageNet class indices]}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mapping = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SPMLError(f"method.teacher_class_map {path}: cannot read it as JSON ({error})") from None
    if not isinstance(mapping, dict):
        raise SPMLError(f"method.teacher_class_map {path}: expected an object {{class name: [indices]}}")
    matrix = torch.zeros(IMAGENET_CLASSES, len(class_names))
    for name, indices in mapping.items():
        if name not in class_names:
            raise SPMLError(f"method.teacher_class_map {path}: '{name}' is not a class of the dataset")
        if not isinstance(indices, list) or not all(isinstance(index, int) and 0 <= index < IMAGENET_CLASSES
                                                    for index in indices):
            raise SPMLError(f"method.teacher_class_map {path}: '{name}' must map to a list of ImageNet class "
                            f"indices in 0..{IMAGENET_CLASSES - 1}")
        matrix[indices, class_names.index(name)] = 1.0
    return matrix, hashlib.sha256(text.encode()).hexdigest()[:12]


class ImageNetTeacher:
    def __init__(self, class_names, class_map, device):
        self.class_map, digest = read_class_map(class_map, list(class_names))
        self.class_map = self.class_map.to(device)
        weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
        network = load_torchvision_network("mobilenet_v2", weights, 32, setting="method.teacher")
        self.network = network.eval().requires_grad_(False).to(device)
        self.preprocess = weights.transforms()  # resize 256, centre crop 224, ImageNet normalisation
        self.device = device
        self.name = f"imagenet_mobilenet_v2-{digest}"

    @classmethod
    def from_settings(cls, config, images, device):
        return cls(images.class_names, config.teacher_class_map, device)

    @torch.no_grad()
    def scores(self, images):
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        probabilities = self.network(batch).float().softmax(dim=1)
        return (probabilities @ self.class_map).clamp(max=1.0)  # a sum of probabilities; clamp: rounding only
