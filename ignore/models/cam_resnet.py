"""A torchvision ResNet trunk with a 1x1-conv CAM head: logits = global average of the CAM."""
import pickle
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from torch import nn

from ..errors import SPMLError

BACKBONES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def load_state_dict_file(path):
    """A state dict from a local .pth or .safetensors file; a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SPMLError(f"{path}: pretrained weights file not found (nothing is ever downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, SafetensorError) as error:
        raise SPMLError(f"{path}: cannot read weights ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise SPMLError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


class CAMResNet(nn.Module):
    """forward(images) -> {"logits": (B, C), "cam": (B, C, h, w)}.

    A list of image batches runs one forward per batch (each with its own BatchNorm
    statistics) inside one call, so DDP sees a single forward per step.
    """

    def __init__(self, backbone, num_classes, pretrained=""):
        super().__init__()
        if backbone not in BACKBONES:
            raise SPMLError(f"model.backbone '{backbone}' is not one of {sorted(BACKBONES)}")
        network = getattr(torchvision.models, backbone)(weights=None)
        if pretrained:
            load_pretrained(network, pretrained)
        self.trunk = nn.Sequential(*list(network.children())[:-2])  # everything before avgpool and fc
        self.head = nn.Conv2d(BACKBONES[backbone], num_classes, kernel_size=1, bias=True)

    def forward_features(self, images):
        return self.trunk(images)

    def forward_head(self, features):
        cam = self.head(features)
        return {"logits": cam.mean(dim=(2, 3)), "cam": cam}

    def forward(self, images):
        if isinstance(images, (list, tuple)):
            return [self.forward_head(self.forward_features(batch)) for batch in images]
        return self.forward_head(self.forward_features(images))

    def head_parameters(self):
        return list(self.head.parameters())


def load_pretrained(network, path):
    """Load a torchvision ResNet state dict; the ImageNet fc layer may be absent or present."""
    state = load_state_dict_file(path)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = {key for key in network.state_dict() if not key.startswith("fc.")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise SPMLError(
            f"{path}: not a {type(network).__name__} state dict "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    own = network.state_dict()
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise SPMLError(f"{path}: '{key}' has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    network.load_state_dict(state, strict=False)
