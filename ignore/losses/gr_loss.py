"""GR-Loss (Chen et al., IJCAI 2024): a generalised robust loss for the unannotated labels.

With p = sigmoid(z), an observed positive costs -log p. An unannotated label costs

    V(p) * (K(p) * L+(p) + (1 - K(p)) * L-(p)),
    L+(p) = (1 - p^q+) / q+          the loss of treating it as a positive (q+ -> 0: -log p)
    L-(p) = (1 - (1 - p)^q-) / q-    the loss of treating it as a negative (q- = 1: p itself)
    K(p) = sigmoid(w p + b)          how likely it is a positive
    V(p) = exp(-(p - mu)^2 / (2 sigma^2))   a weight that peaks at mu

K and V read p without a gradient, as the authors'. The four parameters move linearly with the
epoch, as in the authors' code (their epoch e = our epoch + 1, T = train.epochs): w and b from
their start value, reaching start + (end - start) (T - 1) / T in the last epoch; mu and sigma one
step ahead, from start + (end - start) / T in the first epoch to their end value in the last.
Means over the B x C entries, as theirs. In logits form: p^q = exp(q log sigmoid(z)). An observed
negative (-1) is known: BCE against 0, not the robust loss.
"""
import torch
import torch.nn.functional as F

from .base import Method, StepOutput, bce, entry_mean, observed_positive, unannotated, weak_logits


def robust_losses(logits, q_positive, q_negative):
    """(L+, L-) in logits form: (1 - p^q) / q = -expm1(q log p) / q, exact also for a small q."""
    positive = -torch.expm1(q_positive * F.logsigmoid(logits)) / q_positive
    negative = -torch.expm1(q_negative * F.logsigmoid(-logits)) / q_negative
    return positive, negative


def linear(start, end, progress):
    return start + (end - start) * progress


class GeneralisedRobustLoss(Method):
    def schedule(self, epoch):
        """(w, b, mu, sigma) of `epoch` (0-based), the authors' linear schedules over train.epochs."""
        config, epochs = self.config, self.epochs
        w = linear(config.gr_k_slope_start, config.gr_k_slope_end, epoch / epochs)
        b = linear(config.gr_k_bias_start, config.gr_k_bias_end, epoch / epochs)
        mu = linear(config.gr_v_mean_start, config.gr_v_mean_end, (epoch + 1) / epochs)
        sigma = linear(config.gr_v_std_start, config.gr_v_std_end, (epoch + 1) / epochs)
        return w, b, mu, sigma

    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        positive = observed_positive(batch)
        w, b, mu, sigma = self.schedule(epoch)
        p = torch.sigmoid(logits.detach())
        k = torch.sigmoid(w * p + b)
        v = torch.exp(-0.5 * ((p - mu) / sigma) ** 2)
        loss_positive_side, loss_negative_side = robust_losses(logits, self.config.gr_q_positive,
                                                               self.config.gr_q_negative)
        robust = v * (k * loss_positive_side + (1 - k) * loss_negative_side)
        unknown = unannotated(batch)
        loss = entry_mean(torch.where(unknown, robust, bce(logits, positive.float())))
        # the unannotated labels' mean K and V: where the schedules stand (no host sync)
        count = unknown.sum().clamp(min=1)
        parts = {"loss_gr": loss, "k_mean": (k * unknown).sum() / count, "v_mean": (v * unknown).sum() / count}
        return StepOutput(loss, logits, parts)
