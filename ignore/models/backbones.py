"""Trunks: image -> feature map (B, F, h, w). The heads attach to any of them."""
import pickle
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from torch import nn

from ..errors import SPMLError

RESNET_WIDTHS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def small_cnn():
    """Five 3x3 conv layers, stride 8: a from-scratch trunk that learns the demo in minutes on a CPU.

    Not a research backbone: the published protocol uses an ImageNet ResNet-50. Its stride
    of 8 gives an 8x8 CAM at 64 px, fine enough to mask one digit of a demo canvas.
    """
    def block(inputs, outputs, pool):
        layers = [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    layers = block(3, 32, True) + block(32, 64, True) + block(64, 128, False) + block(128, 128, True) + block(128, 256, False)
    return nn.Sequential(*layers), 256


def build_trunk(name, pretrained=""):
    """(trunk, feature width). pretrained: a local torchvision state dict for a ResNet."""
    if name == "small_cnn":
        if pretrained:
            raise SPMLError("model.pretrained is for the torchvision ResNets; small_cnn trains from scratch")
        return small_cnn()
    if name not in RESNET_WIDTHS:
        raise SPMLError(f"model.backbone '{name}' is not one of {sorted(RESNET_WIDTHS) + ['small_cnn']}")
    network = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        load_pretrained(network, pretrained)
    return nn.Sequential(*list(network.children())[:-2]), RESNET_WIDTHS[name]  # drop avgpool and fc


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


def load_pretrained(network, path):
    """Load a torchvision ResNet state dict; the ImageNet fc layer may be absent or present."""
    state = load_state_dict_file(path)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    own = {key: value for key, value in network.state_dict().items() if not key.startswith("fc.")}
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise SPMLError(
            f"{path}: not a {type(network).__name__} state dict "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise SPMLError(f"{path}: '{key}' has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    network.load_state_dict(state, strict=False)
