"""A trunk with a 1x1-conv CAM head: logits = global average of the class activation maps."""
from torch import nn

from .classifier import Classifier


class CAMClassifier(Classifier):
    """The CAM is the 1x1 head applied at every cell; its global average is the logit (SPEC 2.2)."""

    def __init__(self, backbone, num_classes, pretrained="", channels_last=False, output_stride=32):
        super().__init__(backbone, pretrained, channels_last, output_stride)
        self.head = nn.Conv2d(self.trunk_width, num_classes, kernel_size=1, bias=True)
        self.to(memory_format=self.memory_format)

    def forward_head(self, features):
        cam = self.head(features)
        return {"logits": cam.mean(dim=(2, 3)), "cam": cam}

    def head_parameters(self):
        return list(self.head.parameters())
