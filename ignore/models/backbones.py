"""Trunks: image -> feature map (B, F, h, w), with the preprocessing their weights expect.

The heads (CAM, ...) attach to any of them. Pretrained weights come the torchvision way:
`model.pretrained=imagenet` (or an enum name such as IMAGENET1K_V2) loads
`torchvision.models.get_model_weights(backbone)` through torchvision's own cache,
`$TORCH_HOME/hub/checkpoints/`, downloading as torchvision does when the file is absent;
any other value is a local state-dict file.
"""
import pickle
import urllib.error
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError
from torch import hub, nn

from ..data.views import IMAGENET_MEAN, IMAGENET_STD
from ..errors import SPMLError
from .registry import BACKBONES

# "imagenet" means torchvision's first ImageNet weights: the ResNet-50 of the SPML papers
# (the authors' `resnet50(pretrained=True)`) is IMAGENET1K_V1.
IMAGENET_ALIAS = "IMAGENET1K_V1"
WIDTHS = {name: width for name, width in BACKBONES.items() if name != "small_cnn"}  # torchvision's trunks
OUTPUT_STRIDES = (16, 32)


@dataclass
class Trunk:
    module: nn.Module
    width: int
    mean: tuple = IMAGENET_MEAN  # the input normalisation the weights were trained with
    std: tuple = IMAGENET_STD


def small_cnn():
    """Five 3x3 conv layers, stride 8: a from-scratch trunk that learns the demo in minutes on a CPU.

    Not a research backbone: the published protocol uses an ImageNet ResNet-50. Its stride
    of 8 gives an 8x8 CAM at 64 px, fine enough to mask one digit of a demo canvas.
    """
    def block(number, inputs, outputs, pool):
        layers = [(f"conv{number}", nn.Conv2d(inputs, outputs, 3, padding=1, bias=False)),
                  (f"bn{number}", nn.BatchNorm2d(outputs)), (f"relu{number}", nn.ReLU(inplace=True))]
        return layers + ([(f"pool{number}", nn.MaxPool2d(2))] if pool else [])

    widths = [(3, 32, True), (32, 64, True), (64, 128, False), (128, 128, True), (128, 256, False)]
    return nn.Sequential(OrderedDict(sum((block(number, *width) for number, width in enumerate(widths, 1)), [])))


def build_trunk(name, pretrained="", output_stride=32):
    """A Trunk. pretrained: "", "imagenet", a torchvision weights name, or a local state dict."""
    if name == "small_cnn":
        if pretrained:
            raise SPMLError("model.pretrained: small_cnn trains from scratch; pretrained weights are for "
                            f"{sorted(WIDTHS)}")
        if output_stride != 32:
            raise SPMLError("model.output_stride: small_cnn has a fixed stride of 8; leave output_stride at 32")
        return Trunk(small_cnn(), BACKBONES[name])
    if name not in WIDTHS:
        raise SPMLError(f"model.backbone '{name}' is not one of {sorted(WIDTHS) + ['small_cnn']}")
    if output_stride not in OUTPUT_STRIDES:
        raise SPMLError(f"model.output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    weights = torchvision_weights(name, pretrained)
    network = load_torchvision_network(name, weights, output_stride)
    if pretrained and weights is None:
        load_local_weights(network, pretrained)
    if weights is not None:
        preprocessing = weights.transforms()
        mean, std = tuple(preprocessing.mean), tuple(preprocessing.std)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    # torchvision's own layer names (`layer1.0.conv1.weight`, `features.3.conv.0.0.weight`), so that an
    # export's `trunk.` weights load into torchvision's network once the prefix is stripped
    if name == "mobilenet_v2":
        return Trunk(nn.Sequential(OrderedDict(features=network.features)), WIDTHS[name], mean, std)
    return Trunk(nn.Sequential(OrderedDict(list(network.named_children())[:-2])), WIDTHS[name], mean, std)  # no avgpool, fc


def torchvision_weights(name, pretrained):
    """The torchvision weights enum member that `pretrained` names, or None for a file path / none."""
    if not pretrained:
        return None
    members = torchvision.models.get_model_weights(name).__members__
    wanted = IMAGENET_ALIAS if pretrained == "imagenet" else pretrained
    return members.get(wanted)


def load_torchvision_network(name, weights, output_stride, setting="model.pretrained"):
    """torchvision's network with `weights` (downloaded into TORCH_HOME if absent), at `output_stride`.

    setting: the key that asked for the weights, named by the error when they cannot be had."""
    dilate_resnet = name.startswith("resnet") and output_stride == 16
    if dilate_resnet and name != "resnet50":
        raise SPMLError(f"model.output_stride=16 needs dilated bottleneck blocks: use resnet50, not {name}")
    options = {"replace_stride_with_dilation": [False, False, True]} if dilate_resnet else {}
    if weights is None:
        return dilated(name, torchvision.models.get_model(name, weights=None, **options), output_stride)
    cached = Path(hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        network = torchvision.models.get_model(name, weights=weights, **options)
    except (urllib.error.URLError, OSError) as error:
        raise SPMLError(f"{setting}: {name} {weights.name} weights are not in {cached} and could not be "
                        f"downloaded ({error}); copy the file there or set TORCH_HOME") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise SPMLError(f"{cached}: cannot read {name} {weights.name} weights ({type(error).__name__}); "
                        "delete it to download it again") from None
    return dilated(name, network, output_stride)


def dilated(name, network, output_stride):
    """The network at `output_stride` (ResNets get it from torchvision's constructor)."""
    if name == "mobilenet_v2" and output_stride == 16:
        dilate_last_mobilenet_stage(network.features)
    return network


def dilate_last_mobilenet_stage(features):
    """Output stride 32 -> 16: the last stride-2 block (features[14]) keeps its resolution and
    the blocks after it see a dilation of 2 (DeepLab's rule). Weights are unchanged."""
    for index, block in enumerate(features[14:18], start=14):
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):  # the depthwise conv
                conv.stride = (1, 1)
                if index > 14:
                    conv.dilation, conv.padding = (2, 2), (2, 2)


def load_state_dict_file(path):
    """A state dict from a local .pth or .safetensors file; a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SPMLError(f"model.pretrained: {path} is neither a file nor a torchvision weights name "
                        f"('imagenet', {IMAGENET_ALIAS}, ...)")
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


def load_local_weights(network, path):
    """Load a torchvision state dict of this network; its ImageNet classifier may be absent or present."""
    classifier = ("fc.", "classifier.")
    state = {key: value for key, value in load_state_dict_file(path).items() if not key.startswith(classifier)}
    own = {key: value for key, value in network.state_dict().items() if not key.startswith(classifier)}
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
