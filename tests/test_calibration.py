"""IGNORE's calibrated rule: the logistic fit against scikit-learn, the step's rejections by hand,
and the fit on validation batches scored as the step scores training batches."""
import logging
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ignore.losses.calibration import RIDGE, RejectionCalibration, logistic_fit
from test_ignore_method import IMAGES, LABELS, OBSERVED, ImageIsCAM, batch, make_method
from test_rejection_controls import loss_without

# drops (weak - masked) of the hand batch: [0.25, 0.5, 1.5], [1.0, 0.5, 0.5]; weak logits
# [0.75, 1.0, 3.0], [2.0, 0.5, 2.5]; CAM peaks outside the kept region (pixel 1 of image 0, pixel 0
# of image 1) [0.5, 1.0, 3.0], [2.0, 1.0, 1.0]; unannotated [F, T, T], [T, T, F]; the false
# negative (0, 1). With bias -3.25 and weights 1, 1, 1 the log-odds are -3.25 + drop + logit + outside:
#   image 0: (-1.75), -0.75, 4.25      image 1: 1.75, -1.25, (0.75)      (annotated in brackets)
COEFFICIENTS = [-3.25, 1.0, 1.0, 1.0]


def calibrated_method(reject_probability=0.5, fitted=True, budget=1.0):
    method = make_method(rule="calibrated", reject_probability=reject_probability)
    method.calibration.coefficients.copy_(torch.tensor(COEFFICIENTS))
    method.calibration.fitted.fill_(fitted)
    method.calibration.budget.fill_(budget)
    return method


@pytest.mark.parametrize("reject_probability, rejected", [
    (0.5, {(0, 2), (1, 0)}),  # log-odds above 0
    (0.3, {(0, 1), (0, 2), (1, 0)}),  # above log(0.3 / 0.7) = -0.847
    (0.9, {(0, 2)}),  # above log(9) = 2.197
])
def test_the_step_rejects_the_unannotated_labels_above_the_probability(reject_probability, rejected):
    output = calibrated_method(reject_probability).step(ImageIsCAM(), batch(), epoch=1)
    assert output.parts["loss_ign"].item() == pytest.approx(loss_without(rejected), rel=1e-6)
    assert int(output.counts["rejected"]) == len(rejected)
    assert int(output.counts["rejected_true_fn"]) == int((0, 1) in rejected)
    assert torch.allclose(output.fn_scores["scores"]["calibrated"],
                          torch.tensor([[-1.75, -0.75, 4.25], [1.75, -1.25, 0.75]]))


@pytest.mark.parametrize("budget, rejected", [
    (0.5, {(0, 2), (1, 0)}),  # 2 of the 4 unannotated labels: the two highest of the three suspects
    (0.25, {(0, 2)}),  # 1 of 4: the highest, 4.25
    (0.2, set()),  # 0.8 of a label: none
])
def test_a_first_batch_rejects_at_most_the_budget_share_of_its_unannotated_labels_highest_first(budget, rejected):
    # probability 0.3: the suspects are (0, 1) -0.75, (0, 2) 4.25, (1, 0) 1.75
    output = calibrated_method(0.3, budget=budget).step(ImageIsCAM(), batch(), epoch=1)
    assert output.parts["loss_ign"].item() == pytest.approx(loss_without(rejected), rel=1e-6)
    assert int(output.counts["rejected"]) == len(rejected)


def test_what_a_batch_leaves_of_the_budget_the_next_batches_may_use():
    method = calibrated_method(0.3, budget=0.2)  # 0.8 of a label a batch
    steps = [method.step(ImageIsCAM(), batch(), epoch=1) for _ in range(3)]
    # allowance 0.8: none; 1.6: the highest, 4.25, leaving 0.6; 1.4: the highest again, leaving 0.4
    assert [int(output.counts["rejected"]) for output in steps] == [0, 1, 1]
    assert steps[1].parts["loss_ign"].item() == pytest.approx(loss_without({(0, 2)}), rel=1e-6)
    assert method.calibration.allowance.item() == pytest.approx(0.4)


def test_nothing_is_rejected_before_the_first_fit_nor_in_the_warm_up():
    assert int(calibrated_method(fitted=False).step(ImageIsCAM(), batch(), epoch=1).counts["rejected"]) == 0
    assert int(calibrated_method().step(ImageIsCAM(), batch(), epoch=0).counts["rejected"]) == 0


@pytest.mark.parametrize("seed", range(3))
def test_the_logistic_fit_is_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(400, 2)) * [1.0, 3.0]
    targets = (rng.random(400) < 1 / (1 + np.exp(-(features @ [1.5, -0.4] - 2.0)))).astype(float)
    reference = LogisticRegression(C=1 / RIDGE, tol=1e-12, max_iter=10_000).fit(features, targets)
    ours = logistic_fit(torch.tensor(np.c_[np.ones(400), features]), torch.tensor(targets))
    np.testing.assert_allclose(ours.numpy(), np.r_[reference.intercept_, reference.coef_[0]], atol=1e-6)


def test_calibrate_fits_the_unannotated_validation_labels_scored_as_in_training():
    method = make_method(rule="calibrated")
    method.calibration.allowance.fill_(2.5)
    val_batches = [{"image": IMAGES.clone(), "observed": OBSERVED, "labels": LABELS}]
    summary = method.calibrate(ImageIsCAM(), val_batches)
    # the four unannotated entries: (drop, logit, outside peak, false negative)
    drop, logit = torch.tensor([0.5, 1.5, 1.0, 0.5]), torch.tensor([1.0, 3.0, 2.0, 0.5])
    outside = torch.tensor([1.0, 3.0, 2.0, 1.0])
    features = torch.stack([torch.ones(4), drop, logit, outside], 1).double()
    expected = logistic_fit(features, torch.tensor([1.0, 0, 0, 0]).double())
    assert torch.equal(method.calibration.coefficients, expected.float()) and bool(method.calibration.fitted)
    log_odds = features @ expected
    rejected = log_odds > 0
    assert summary["calibration_entries"] == 4 and summary["calibration_fn_share"] == 0.25
    assert summary["calibration_rejected_fraction"] == rejected.double().mean().item()
    assert method.calibration.budget.item() == pytest.approx(rejected.double().mean().item())  # the next epochs' cap
    assert method.calibration.allowance.item() == 0  # reset, whatever the epoch before left
    assert [summary[f"calibration_{name}"] for name in ("bias", "drop", "logit", "outside_peak")] == expected.tolist()
    if rejected.any():
        assert summary["calibration_estimated_precision"] == pytest.approx(torch.sigmoid(log_odds[rejected]).mean())
    else:
        assert math.isnan(summary["calibration_estimated_precision"]) and summary["calibration_recall"] == 0.0


def test_the_ema_rule_learns_nothing_on_the_validation_split():
    assert make_method().calibrate(ImageIsCAM(), []) == {}
    assert RejectionCalibration(0.5).suspects(torch.ones(2, 3)).sum() == 0  # not fitted yet
    assert "calibrated" not in make_method().step(ImageIsCAM(), batch(), epoch=1).fn_scores["scores"]


def test_validation_labels_without_a_false_negative_reject_nothing_and_say_so(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("ignore.run"), "propagate", True)  # a run in this process turns it off
    method = calibrated_method()  # fitted before: a split without false negatives must undo it
    val_batches = [{"image": IMAGES.clone(), "observed": OBSERVED, "labels": OBSERVED}]  # labels = the single positives
    with caplog.at_level("INFO", logger="ignore.run"):
        summary = method.calibrate(ImageIsCAM(), val_batches)
    assert summary == {"calibration_entries": 4, "calibration_fn_share": 0.0, "calibration_rejected_fraction": 0.0}
    assert not bool(method.calibration.fitted) and method.calibration.budget.item() == 0
    assert int(method.step(ImageIsCAM(), batch(), epoch=1).counts["rejected"]) == 0
    assert "rejects nothing" in caplog.text and "method.rule=ema" in caplog.text
