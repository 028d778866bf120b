"""What every classifier shares: the trunk, the output contract and the call with several views."""
import torch
from torch import nn

from .backbones import build_trunk


class Classifier(nn.Module):
    """forward(images) -> {"logits": (B, C), "cam": (B, C, h, w)}, through `forward_features`
    (the trunk) and the subclass's `forward_head`. Every method reads only this dict, so any
    subclass (the CAM ResNet, Query2Label) runs under every method unchanged.

    A list of image batches runs one forward per batch (each with its own BatchNorm
    statistics) inside one call, so DDP sees a single forward per step; `between(output)`,
    if given, runs on the first batch's output before the next batch goes in (IGNORE's
    masked pass runs there, so its activations never coexist with the next view's graph).
    This base builds the trunk (`trunk`, its output width `trunk_width`, `normalisation`: the
    input mean and std of the trunk's weights) and its memory format; a subclass then builds
    its head on `trunk_width` channels, calls `self.to(memory_format=self.memory_format)` and
    defines `forward_head` and `head_parameters()`, the parameters that learn at
    `model.head_lr_multiplier`.
    """

    def __init__(self, backbone, pretrained="", channels_last=False, output_stride=32):
        super().__init__()
        trunk = build_trunk(backbone, pretrained, output_stride)
        self.trunk = trunk.module
        self.trunk_width = trunk.width
        self.normalisation = {"mean": trunk.mean, "std": trunk.std}  # what the loaders and the export use
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward_features(self, images):
        return self.trunk(images.contiguous(memory_format=self.memory_format))

    def forward(self, images, between=None):
        if not isinstance(images, (list, tuple)):
            return self.forward_head(self.forward_features(images))
        outputs = [self(images[0])]
        if between is not None:
            between(outputs[0])
        return outputs + [self(batch) for batch in images[1:]]
