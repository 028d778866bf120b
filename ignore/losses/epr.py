"""EPR (Cole et al., CVPR 2021): the observed positives only, plus the expected positive
regulariser that pulls the batch's mean number of predicted positives toward k. Observed
negatives (-1), when a dataset has them, add their BCE against 0."""
import torch

from ..errors import SPMLError
from .base import Method, StepOutput, bce, entry_mean, observed_negative, observed_positive, weak_logits


def expected_positives(config, positives_per_image):
    """k: method.epr_expected_positives, or (0) the training labels' mean, as Cole et al. (who
    acknowledge that it reads the clean labels: a single number, not a per-image label)."""
    k = config.epr_expected_positives or positives_per_image
    if k <= 0:
        raise SPMLError("method.epr_expected_positives is 0 and the training split's mean positives per image is "
                        "unknown; set it, e.g. method.epr_expected_positives=1.5")
    return k


def expected_positive_regulariser(probabilities, k, num_classes):
    """(mean over images of the summed probabilities - k)^2 / C^2 (Cole et al.'s scale)."""
    return (probabilities.sum(dim=1).mean() - k) ** 2 / num_classes ** 2


class ExpectedPositiveRegulariser(Method):
    def __init__(self, config, num_classes, accelerator, **context):
        super().__init__(config, num_classes, accelerator, **context)
        self.k = expected_positives(config, self.positives_per_image)

    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        positive = observed_positive(batch)
        # the positives' BCE summed, over all B x C entries as the authors (unannotated entries add 0)
        loss_positive = entry_mean(bce(logits, torch.ones_like(logits)) * positive)
        loss_negative = entry_mean(bce(logits, torch.zeros_like(logits)) * observed_negative(batch))
        loss_epr = expected_positive_regulariser(torch.sigmoid(logits), self.k, self.num_classes)
        loss = loss_positive + loss_negative + loss_epr
        return StepOutput(loss, logits, {"loss_positive": loss_positive, "loss_negative": loss_negative,
                                         "loss_epr": loss_epr})
