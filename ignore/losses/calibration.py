"""IGNORE's calibrated rejection rule: how likely an unannotated label is a false negative,
learned each epoch on the validation split (method.rule=calibrated).

The validation images carry clean labels (the protocol uses them to pick the best epoch) and
the same single-positive observation as the training images. Scoring them as a training step
does and knowing which unannotated labels are in fact positive, a logistic model
P(false negative | drop, logit, outside peak) is fitted on three scores of each label: the drop
z_w - z_m of its logit once the image is masked to the observed positive's region (IGNORE's
gap), the weak logit z_w, and its peak CAM value outside that region. The step then rejects an
unannotated label when that probability exceeds method.reject_probability, and never more
of the epoch's unannotated labels so far than the share the fitted rule rejects on the validation
split (the highest probabilities first). The training images are not the validation images: the
model has fitted their assumed negatives, and a rejected label's logit is no longer pushed down,
so it scores higher at the next step. Without that budget, from scratch on the dense demo, an
epoch's fit that rejected 5.0% of the validation labels at a precision of 0.67 rejected 23.6% of
the training labels at 0.28.
The rule therefore follows the data's own false-negative share (a dataset with few false
negatives gets few rejections), weighs each score by what it knows, and rejects nothing while no
label is likely enough: it cannot reject more than the validation split says is there.
"""
import logging
import math

import torch
from torch import nn

LOGGER = logging.getLogger("ignore.run")  # the run's lines: on the main process, console and train.log

FEATURES = ("drop", "logit", "outside_peak")  # after the bias
NEWTON_STEPS = 50
RIDGE = 1.0  # an L2 penalty on the weights (not the bias): finite when the classes separate perfectly


def logistic_fit(features, targets):
    """Coefficients (float64) of a ridge-regularised logistic regression by Newton's method:
    scikit-learn's LogisticRegression(C=1 / RIDGE) with an unpenalised intercept.

    features: (N, K) float64, the bias column first; targets: (N,) in {0, 1}. Deterministic:
    the same data gives the same bits on every process.
    """
    coefficients = features.new_zeros(features.shape[1])
    penalty = RIDGE * torch.diag(torch.tensor([0.0] + [1.0] * (features.shape[1] - 1), dtype=features.dtype))
    for _ in range(NEWTON_STEPS):
        probability = torch.sigmoid(features @ coefficients)
        gradient = features.T @ (probability - targets) + penalty @ coefficients
        hessian = features.T @ (features * (probability * (1 - probability))[:, None]) + penalty
        step = torch.linalg.solve(hessian, gradient)
        coefficients = coefficients - step
        if step.abs().max() < 1e-10:
            break
    return coefficients


class RejectionCalibration(nn.Module):
    """The fitted coefficients and the rejection budget, in buffers: checkpointed, and equal on every
    process because every process fits the same gathered data."""

    def __init__(self, reject_probability):
        super().__init__()
        self.boundary = math.log(reject_probability / (1 - reject_probability))  # on the log-odds
        self.register_buffer("coefficients", torch.zeros(1 + len(FEATURES)))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("budget", torch.zeros(()))  # the share of the unannotated labels an epoch may reject
        # labels the epoch may still reject: the budget share of the unannotated labels seen since the
        # fit, less those rejected (float64: exact over an epoch of millions of labels)
        self.register_buffer("allowance", torch.zeros((), dtype=torch.float64))

    def log_odds(self, scores):
        """log P(false negative) / P(not); scores: {name in FEATURES: tensor}, all of one shape."""
        bias, *weights = self.coefficients
        return bias + sum(weight * scores[name] for weight, name in zip(weights, FEATURES))

    def suspects(self, log_odds):
        """(B, C) bool from `log_odds`: likely enough to be false negatives; none before the first fit
        (no host sync)."""
        return (log_odds > self.boundary) & self.fitted

    def within_budget(self, log_odds, suspect, unknown, accelerator):
        """`suspect` cut to what the epoch may still reject: the `budget` share of the unannotated labels
        of its global batches so far, less those already rejected, the highest log-odds first (all that
        tie with the last one kept). A batch may use what earlier batches left, so a budget below one
        label a batch still rejects its share over the epoch, and a batch that holds more false
        negatives than the average is not cut to the average. Every process gathers the same
        candidates and counts, so the cut is the one a single process with the global batch makes."""
        self.allowance += self.budget.double() * accelerator.reduce(unknown.sum(), reduction="sum")
        candidates = accelerator.pad_across_processes(torch.where(suspect, log_odds, float("-inf")).flatten(),
                                                      pad_index=float("-inf"))
        ranked = accelerator.gather(candidates).sort(descending=True).values
        allowed = self.allowance.floor().long()
        last = ranked[(allowed - 1).clamp(0, len(ranked) - 1)]
        # what the global batch rejects, counted in the gathered candidates (no second reduce)
        self.allowance -= ((ranked > float("-inf")) & (ranked >= last)).sum() * (allowed > 0)
        return suspect & (allowed > 0) & (log_odds >= last)

    @torch.no_grad()
    def fit(self, scores, is_false_negative):
        """Fit on the unannotated validation labels (scores: {name in FEATURES: 1-D tensor}, all of the
        length of is_false_negative); returns what the fitted rule does on them: its rejected share, its
        estimated and its true precision, its recall, its coefficients."""
        features = torch.stack([torch.ones(len(is_false_negative), dtype=torch.float64)]
                               + [scores[name].double().cpu() for name in FEATURES], dim=1)
        targets = is_false_negative.double().cpu()
        if not targets.any():
            # No unannotated positive to learn from: validation labels that hold only the observed positives
            # (a dataset without clean labels) say nothing about false negatives, so nothing is rejected.
            self.fitted.fill_(False)
            self.budget.fill_(0.0)
            self.allowance.zero_()
            LOGGER.info("warning: method.rule=calibrated: no unannotated label of the validation split is positive "
                        "(are its labels only the single positives?), so the rule rejects nothing; "
                        "method.rule=ema needs no clean labels")
            return {"calibration_entries": len(targets), "calibration_fn_share": 0.0,
                    "calibration_rejected_fraction": 0.0}
        coefficients = logistic_fit(features, targets)
        self.coefficients.copy_(coefficients.to(self.coefficients))
        self.fitted.fill_(True)
        log_odds = features @ coefficients
        rejected = log_odds > self.boundary
        count, true_count = int(rejected.sum()), int(targets[rejected].sum())
        self.budget.fill_(count / len(targets))
        self.allowance.zero_()  # the next epoch starts its own account
        return {
            "calibration_entries": len(targets),
            "calibration_fn_share": float(targets.mean()),
            "calibration_rejected_fraction": count / len(targets),
            "calibration_estimated_precision": float(torch.sigmoid(log_odds[rejected]).mean()) if count else math.nan,
            "calibration_precision": true_count / count if count else math.nan,
            "calibration_recall": true_count / max(int(targets.sum()), 1),
            **{f"calibration_{name}": float(value) for name, value in zip(("bias",) + FEATURES, coefficients)},
        }
