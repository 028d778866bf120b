"""WAN (Cole et al., CVPR 2021): assume negative with each assumed negative weighted 1/(C-1),
so that the C - 1 negatives of an image weigh as much as its one positive. An observed negative
(-1) is known, not assumed: it weighs 1, as the positive."""
import torch

from .base import Method, StepOutput, bce, entry_mean, observed_positive, unannotated, weak_logits


class WeightedAssumeNegative(Method):
    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        positive = observed_positive(batch)
        weights = torch.where(unannotated(batch), 1.0 / max(self.num_classes - 1, 1), 1.0)
        loss = entry_mean(bce(logits, positive.float()) * weights)  # over B x C, as the authors
        return StepOutput(loss, logits, {"loss_wan": loss})
