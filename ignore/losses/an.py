"""Assume negative (AN): every unannotated label is a negative (an observed negative is one already)."""
from .base import Method, StepOutput, bce, observed_positive, weak_logits


class AssumeNegative(Method):
    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        loss = bce(logits, observed_positive(batch).float()).mean()
        return StepOutput(loss, logits, {"loss_an": loss})
