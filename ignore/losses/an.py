"""Assume negative (AN): every unannotated label is a negative."""
from .base import Method, bce, observed_positive, weak_logits


class AssumeNegative(Method):
    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        loss = bce(logits, observed_positive(batch).float()).mean()
        return {"loss": loss, "logits": logits.detach(), "parts": {"loss_an": loss.detach()}, "counts": {}}
