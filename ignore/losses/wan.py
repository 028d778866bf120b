"""WAN (Cole et al., CVPR 2021): assume negative with each assumed negative weighted 1/(C-1),
so that the C - 1 negatives of an image weigh as much as its one positive."""
from .base import Method, StepOutput, bce, entry_mean, observed_positive, weak_logits


class WeightedAssumeNegative(Method):
    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        positive = observed_positive(batch)
        weights = positive.float() + (~positive).float() / max(self.num_classes - 1, 1)
        loss = entry_mean(bce(logits, positive.float()) * weights)  # over B x C, as the authors
        return StepOutput(loss, logits, {"loss_wan": loss})
