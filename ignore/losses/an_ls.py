"""AN-LS (Cole et al., CVPR 2021): assume negative with label smoothing.

The targets move eps toward the other side: 1 - eps for the observed positive, eps for each
assumed negative, as Cole et al. smooth both (method.ls_epsilon, their 0.1). A false
negative then costs a bounded loss once its logit passes logit(eps). An observed negative
(-1) is known, not assumed: its target stays 0, unsmoothed.
"""
import torch

from .base import Method, StepOutput, bce, entry_mean, observed_negative, observed_positive, weak_logits


class AssumeNegativeSmoothed(Method):
    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        epsilon = self.config.ls_epsilon
        targets = observed_positive(batch).float() * (1 - 2 * epsilon) + epsilon
        targets = torch.where(observed_negative(batch), 0.0, targets)
        loss = entry_mean(bce(logits, targets))
        return StepOutput(loss, logits, {"loss_an_ls": loss})
