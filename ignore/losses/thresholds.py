"""IGNORE's two running thresholds, identical on every rank (SPEC 2.6)."""
import torch
from torch import nn


class GapThresholds(nn.Module):
    """EMA of the mean gap at observed positives (scalar) and of each class's mean logit.

    Each update all-reduces (sum, count) over the ranks before the EMA, so every rank
    applies the same global-batch statistic and ends with the same bits; sums and counts,
    not means, because the last batch of each rank can be shorter. Buffers, so they are
    part of the state dict that checkpoints save and resume restores.
    """

    def __init__(self, num_classes, gap_lambda, avg_lambda, bias_correction=False):
        super().__init__()
        self.gap_lambda = gap_lambda
        self.avg_lambda = avg_lambda
        self.bias_correction = bias_correction
        self.register_buffer("gap_threshold", torch.zeros(()))
        self.register_buffer("avg_threshold", torch.zeros(num_classes))
        # EMAs of 1 that started at 0, i.e. 1 - decay^updates: an EMA started at 0 divided by
        # its weight is unbiased from the first update on (Adam's bias correction).
        self.register_buffer("gap_weight", torch.zeros(()))
        self.register_buffer("avg_weight", torch.zeros(()))

    def gap(self):
        """The gap threshold the rule compares with: the EMA, bias-corrected if configured."""
        return self.gap_threshold / self.gap_weight.clamp(min=1e-12) if self.bias_correction else self.gap_threshold

    def average(self):
        """The per-class average-logit threshold (LAT), bias-corrected if configured."""
        return self.avg_threshold / self.avg_weight.clamp(min=1e-12) if self.bias_correction else self.avg_threshold

    @torch.no_grad()
    def update(self, gap, logits, observed_positive, reduce_sum):
        """gap, logits: (B, C) float; observed_positive: (B, C) bool; reduce_sum: all-reduce."""
        positive = observed_positive.float()
        statistics = torch.cat([
            (gap * positive).sum().reshape(1),
            positive.sum().reshape(1),
            logits.sum(dim=0),
            torch.full((1,), float(logits.shape[0]), device=logits.device),
        ]).double()  # float64 so the sum over ranks does not depend on the order much
        statistics = reduce_sum(statistics)
        gap_sum, gap_count = statistics[0], statistics[1]
        logit_sum, logit_count = statistics[2:-1], statistics[-1]
        # torch.where rather than `if count > 0`: no host-device synchronisation in the step.
        # A global batch without an observed positive leaves the gap threshold as it was.
        self._ema(self.gap_threshold, self.gap_lambda, gap_sum, gap_count)
        self._ema(self.avg_threshold, self.avg_lambda, logit_sum, logit_count)
        self._ema(self.gap_weight, self.gap_lambda, gap_count, gap_count)
        self._ema(self.avg_weight, self.avg_lambda, logit_count, logit_count)

    @staticmethod
    def _ema(threshold, decay, total, count):
        mean = (total / count.clamp(min=1)).to(threshold.dtype)
        threshold.copy_(torch.where(count > 0, decay * threshold + (1 - decay) * mean, threshold))
