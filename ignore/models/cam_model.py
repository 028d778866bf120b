"""A trunk with a 1x1-conv CAM head: logits = global average of the class activation maps."""
import torch
from torch import nn

from .backbones import build_trunk
from .classifier import Classifier


class CAMClassifier(Classifier):
    """The CAM is the 1x1 head applied at every cell; its global average is the logit (SPEC 2.2)."""

    def __init__(self, backbone, num_classes, pretrained="", channels_last=False, output_stride=32):
        super().__init__()
        trunk = build_trunk(backbone, pretrained, output_stride)
        self.trunk = trunk.module
        self.normalisation = {"mean": trunk.mean, "std": trunk.std}  # what the loaders and the export use
        self.head = nn.Conv2d(trunk.width, num_classes, kernel_size=1, bias=True)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward_features(self, images):
        return self.trunk(images.contiguous(memory_format=self.memory_format))

    def forward_head(self, features):
        cam = self.head(features)
        return {"logits": cam.mean(dim=(2, 3)), "cam": cam}

    def head_parameters(self):
        return list(self.head.parameters())
