"""ROLE (Cole et al., CVPR 2021): the network and a per-image label-estimate matrix learn
from each other.

Each training image (dataset row) has C learned label estimates e = sigmoid(theta). The loss,
halves as in the paper: BCE of the prediction p at the observed positive and BCE of p
against the detached estimates; symmetrically for the estimates (BCE of e at the observed
positive, of e against the detached p); plus the expected positive regulariser (EPR, k
positives an image) on p and on e. Means over the B x C entries, as the authors.

The estimates start, as the authors', uniform in logit(0.4)..logit(0.6) for unannotated
labels and at 0.995 for observed positives. The authors train them as one dense parameter
with the network's Adam (10x its learning rate); here they are buffers updated with Adam
one row at a time when the row is in a batch, bias-corrected by that row's own number of
visits (a row appears once an epoch, so a dense Adam would move it on momentum long after).
Rows are shared by every rank after each step (row_state.py) and checkpointed.

An observed negative (-1) is known, never estimated: the network trains on BCE against 0
there, mirroring the positives (its own term plus the estimate term with the estimate
replaced by 0), and the estimate itself is pulled to 0, never toward the prediction.
"""
import math

import torch

from .base import Method, StepOutput, bce, entry_mean, observed_negative, observed_positive, weak_logits
from .epr import expected_positive_regulariser, expected_positives
from .row_state import read_rows, write_shared_rows

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
UNANNOTATED_INIT = math.log(0.6 / 0.4)  # initial estimates uniform in sigmoid^-1 of 0.4..0.6
POSITIVE_INIT = math.log(0.995 / 0.005)


class LabelEstimates(Method):
    def __init__(self, config, num_classes, accelerator, **context):
        super().__init__(config, num_classes, accelerator, **context)
        self.k = expected_positives(config, self.positives_per_image)
        self.estimate_lr = self.lr * config.role_lr_multiplier
        generator = torch.Generator().manual_seed(self.seed)  # the same matrix on every rank

        def initial_estimates(start, stop):  # rows in order: the same draws block by block as all at once
            return (2 * torch.rand(stop - start, num_classes, generator=generator) - 1) * UNANNOTATED_INIT

        self.register_table("estimate_logits", (num_classes,), fill=initial_estimates)
        self.register_table("adam_first", (num_classes,))
        self.register_table("adam_second", (num_classes,))
        self.register_table("visits")

    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        rows = batch["index"]
        positive, negative = observed_positive(batch), observed_negative(batch)
        first_visit = (read_rows(self.visits, rows) == 0)[:, None]
        theta = torch.where(first_visit & positive, POSITIVE_INIT, read_rows(self.estimate_logits, rows))
        theta = torch.where(first_visit & negative, -POSITIVE_INIT, theta).requires_grad_()
        loss_network, loss_estimates = role_losses(logits, theta, positive, self.k, self.num_classes, negative)
        (gradient,) = torch.autograd.grad(loss_estimates, theta)
        self.update_rows(rows, theta.detach(), gradient)
        loss = loss_network + loss_estimates.detach()
        parts = {"loss_network": loss_network, "loss_estimates": loss_estimates,
                 "estimate_mean": torch.sigmoid(theta.detach()).mean()}
        return StepOutput(loss, logits, parts)

    @torch.no_grad()
    def update_rows(self, rows, theta, gradient):
        """One Adam step on these rows' estimates, then every rank's rows into every rank's buffers."""
        visits = read_rows(self.visits, rows) + 1
        first = BETA1 * read_rows(self.adam_first, rows) + (1 - BETA1) * gradient
        second = BETA2 * read_rows(self.adam_second, rows) + (1 - BETA2) * gradient ** 2
        first_hat = first / (1 - BETA1 ** visits)[:, None]
        second_hat = second / (1 - BETA2 ** visits)[:, None]
        theta = theta - self.estimate_lr * first_hat / (second_hat.sqrt() + ADAM_EPS)
        write_shared_rows(self.accelerator, rows, [self.estimate_logits, self.adam_first, self.adam_second, self.visits],
                          [theta, first, second, visits])


def role_losses(logits, theta, positive, k, num_classes, negative=None):
    """(network loss, estimate loss): each side learns against the other side detached; at an
    observed negative (`negative`, (B, C) bool) both learn against 0 instead."""
    predictions, estimates = torch.sigmoid(logits), torch.sigmoid(theta)
    ones, zeros = torch.ones_like(logits), torch.zeros_like(logits)
    if negative is None:
        negative = torch.zeros_like(positive)
    estimate_targets = torch.where(negative, zeros, estimates.detach())
    prediction_targets = torch.where(negative, zeros, predictions.detach())
    network = 0.5 * entry_mean(bce(logits, ones) * positive + bce(logits, zeros) * negative
                               + bce(logits, estimate_targets))
    network = network + 0.5 * expected_positive_regulariser(predictions, k, num_classes)
    labels = 0.5 * entry_mean(bce(theta, ones) * positive + bce(theta, prediction_targets))
    labels = labels + 0.5 * expected_positive_regulariser(estimates, k, num_classes)
    return network, labels
