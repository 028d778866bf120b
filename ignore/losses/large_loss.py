"""Large Loss Matters (Kim et al., CVPR 2022): LL-R, LL-Ct, LL-Cp.

Assume negative, except that in each batch the largest assumed-negative losses are taken
for false negatives: a share of the batch's B x C entries that grows by
`method.ll_delta_rel` percent each epoch (0 in the first epoch). LL-R rejects them (their
loss counts 0); LL-Ct corrects them to positive for this step only; LL-Cp corrects them for
good: they stay positive in every later epoch. (A widely copied implementation compares the
variant name with `is`, so its LL-Cp never stores a correction and runs as LL-Ct; here the
variant is an enum fixed at construction and the corrections are a per-image buffer.)
Only unknown labels (0) are candidates: an observed negative (-1) keeps its BCE against 0.
"""
import math

import torch

from .base import FN_RATIOS, Method, StepOutput, bce, fn_counts, entry_mean, observed_positive, unannotated
from .row_state import read_rows, write_shared_rows

CORRECTIONS = ("reject", "temporary", "permanent")


def largest(count, values, candidates):
    """The `count` (python int) largest `values` among `candidates` (B, C bool), as a (B, C) bool.

    Ranks rather than a threshold: exactly `count` entries even with ties, no host sync."""
    scores = torch.where(candidates, values, torch.full_like(values, -math.inf)).flatten()
    ranks = torch.empty_like(scores, dtype=torch.long)
    ranks[scores.argsort(descending=True, stable=True)] = torch.arange(scores.numel(), device=scores.device)
    return (ranks.view_as(candidates) < count) & candidates


class LargeLoss(Method):
    ratios = {**FN_RATIOS}

    def __init__(self, config, num_classes, accelerator, correction="reject", **context):
        super().__init__(config, num_classes, accelerator, **context)
        assert correction in CORRECTIONS, correction
        self.correction = correction
        if correction == "permanent":
            self.register_table("corrected", (num_classes,), torch.bool)

    def rate(self, epoch):
        """The share of a batch's entries modified in `epoch` (0-based): 0, delta, 2 delta, ..."""
        return min(1.0, self.config.ll_delta_rel / 100 * epoch)

    def logits(self, output):
        return output["logits"].float()

    def step(self, model, batch, epoch):
        logits = self.logits(model(batch["weak"]))
        positive = observed_positive(batch)
        if self.correction == "permanent":
            corrected_before = read_rows(self.corrected, batch["index"])
            positive = positive | corrected_before  # corrected in an earlier step
        candidates = unannotated(batch) & ~positive  # unknown, not corrected before
        losses = bce(logits, positive.float())
        count = math.ceil(logits.numel() * self.rate(epoch))
        flagged = largest(count, losses.detach(), candidates)
        if self.correction == "reject":
            loss_matrix = torch.where(flagged, torch.zeros_like(losses), losses)
        else:  # corrected: trained as positives
            loss_matrix = torch.where(flagged, bce(logits, torch.ones_like(logits)), losses)
        if self.correction == "permanent":
            write_shared_rows(self.accelerator, batch["index"], [self.corrected],
                              [corrected_before | flagged])
        loss = entry_mean(loss_matrix)  # over all B x C entries, rejected ones counting 0, as the authors
        counts = fn_counts(flagged, batch)
        if self.correction == "permanent":
            counts["corrected_seen"] = (positive & ~observed_positive(batch)).sum()  # corrected before this step
        return StepOutput(loss, logits, {"loss_ll": loss}, counts)
