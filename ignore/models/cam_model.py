"""A trunk with a 1x1-conv CAM head: logits = global average of the class activation maps."""
import torch
from torch import nn

from .backbones import build_trunk


class CAMClassifier(nn.Module):
    """forward(images) -> {"logits": (B, C), "cam": (B, C, h, w)}.

    A list of image batches runs one forward per batch (each with its own BatchNorm
    statistics) inside one call, so DDP sees a single forward per step; `between(output)`,
    if given, runs on the first batch's output before the next batch goes in (IGNORE's
    masked pass runs there, so its activations never coexist with the next view's graph).
    Any model that returns the same dict (a query-based head with attention maps as "cam")
    plugs into the methods unchanged.
    """

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

    def forward(self, images, between=None):
        if not isinstance(images, (list, tuple)):
            return self.forward_head(self.forward_features(images))
        outputs = [self(images[0])]
        if between is not None:
            between(outputs[0])
        return outputs + [self(batch) for batch in images[1:]]

    def head_parameters(self):
        return list(self.head.parameters())
