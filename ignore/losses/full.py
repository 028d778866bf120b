"""Full labels: BCE on the clean labels. The upper bound, not an SPML method."""
from .base import Method, StepOutput, bce, weak_logits


class FullLabels(Method):
    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        loss = bce(logits, batch["labels"].float()).mean()
        return StepOutput(loss, logits, {"loss_full": loss})
