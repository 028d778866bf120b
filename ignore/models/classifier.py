"""What every classifier shares: the output contract and the call with several views."""
from torch import nn


class Classifier(nn.Module):
    """forward(images) -> {"logits": (B, C), "cam": (B, C, h, w)}, through the subclass's
    `forward_features` (the trunk) and `forward_head`. Every method reads only this dict, so
    any subclass (the CAM ResNet, Query2Label) runs under every method unchanged.

    A list of image batches runs one forward per batch (each with its own BatchNorm
    statistics) inside one call, so DDP sees a single forward per step; `between(output)`,
    if given, runs on the first batch's output before the next batch goes in (IGNORE's
    masked pass runs there, so its activations never coexist with the next view's graph).
    Subclasses also set `normalisation` (the input mean and std of the trunk's weights) and
    define `head_parameters()`, the parameters that learn at `model.head_lr_multiplier`.
    """

    def forward(self, images, between=None):
        if not isinstance(images, (list, tuple)):
            return self.forward_head(self.forward_features(images))
        outputs = [self(images[0])]
        if between is not None:
            between(outputs[0])
        return outputs + [self(batch) for batch in images[1:]]
