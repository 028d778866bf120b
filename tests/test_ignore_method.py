"""IGNORE's step on 2x3 tensors, against values worked out by hand.

A stand-in network makes the arithmetic visible: its CAM is the image itself (one
channel per class, 1x2 pixels) and its logits are the CAM's mean. So the mask, the
masked logits and the gaps can all be read off the pixels.
"""
import math

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from ignore.config import MethodConfig
from ignore.losses.ignore import Ignore, batchnorm_mode
from ignore.losses.masking import positive_region_mask
from ignore.losses.thresholds import GapThresholds


class ImageIsCAM(nn.Module):
    def forward(self, images, between=None):
        if isinstance(images, (list, tuple)):
            outputs = [self(images[0])]
            if between is not None:
                between(outputs[0])
            return outputs + [self(batch) for batch in images[1:]]
        return {"cam": images, "logits": images.mean(dim=(2, 3))}


class ImageIsCAMAfter(nn.Module):
    """The same stand-in after a real layer stack (for BatchNorm and autograd checks)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, images):
        return ImageIsCAM()(self.network(images))


# image 0, observed class 0: CAM of class 0 is [1, 0.5] -> normalised [1, 0] -> keep pixel 0
# image 1, observed class 2: CAM of class 2 is [1, 4]   -> normalised [0, 1] -> keep pixel 1
IMAGES = torch.tensor([
    [[[1.0, 0.5]], [[1.0, 1.0]], [[3.0, 3.0]]],
    [[[2.0, 2.0]], [[1.0, 0.0]], [[1.0, 4.0]]],
])
# weak logits (pixel means):   [0.75, 1.0, 3.0], [2.0, 0.5, 2.5]
# masked logits:               [0.5, 0.5, 1.5],  [1.0, 0.0, 2.0]
# gaps |weak - masked|:        [0.25, 0.5, 1.5], [1.0, 0.5, 0.5]
OBSERVED = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
LABELS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # one false negative: image 0, class 1


def softplus(x):
    return math.log1p(math.exp(x))


def bce_positive(z):
    return softplus(-z)


def bce_negative(z):
    return softplus(z)


def make_method(rejection="gap", **overrides):
    # lambdas of 1 freeze the thresholds at the values set below, to test the rule alone
    settings = {"rule": "ema", "gap": "absolute", "cam_threshold": 0.8, **overrides}  # the paper's rule unless a test says
    config = MethodConfig(gap_lambda=1.0, avg_lambda=1.0, warm_up=1, strong_view=True, **settings)
    method = Ignore(config, num_classes=3, accelerator=Accelerator(cpu=True), rejection=rejection)
    method.thresholds.gap_threshold.fill_(0.3)
    method.thresholds.avg_threshold.copy_(torch.tensor([0.5, 0.6, 2.8]))
    return method


def batch():
    # the strong view equals the weak one, so L_reg = 0 and L_ign reads the same logits
    return {"weak": IMAGES.clone(), "strong": IMAGES.clone(), "observed": OBSERVED, "labels": LABELS,
            "index": torch.tensor([7, 3])}


def test_mask_keeps_the_observed_positive_region_per_image():
    mask = positive_region_mask(IMAGES, OBSERVED == 1, (1, 2), threshold=0.8)
    assert mask.squeeze(1).tolist() == [[[1.0, 0.0]], [[0.0, 1.0]]]


def test_mask_does_not_depend_on_the_other_images_of_the_batch():
    alone = positive_region_mask(IMAGES[1:], OBSERVED[1:] == 1, (1, 2), threshold=0.8)
    together = positive_region_mask(IMAGES, OBSERVED == 1, (1, 2), threshold=0.8)
    assert torch.equal(alone, together[1:])


def test_image_without_observed_positive_keeps_every_pixel():
    mask = positive_region_mask(IMAGES, torch.zeros(2, 3, dtype=torch.bool), (1, 2), threshold=0.8)
    assert mask.eq(1).all()


def test_after_warm_up_with_lat_rejects_exactly_the_hand_picked_entries():
    # gap > 0.3:            [F, T, T], [T, T, T]
    # weak > avg (LAT):     [T, T, T], [T, F, F]
    # unannotated, both:    [F, T, T], [T, F, F]  -> 3 rejected
    output = make_method().step(ImageIsCAM(), batch(), epoch=1)
    kept = [bce_positive(0.75), bce_negative(0.5), bce_positive(2.5)]
    assert output.parts["loss_ign"].item() == pytest.approx(sum(kept) / 3, rel=1e-6)
    assert output.parts["loss_spbc"].item() == pytest.approx((bce_positive(0.75) + bce_positive(2.5)) / 2, rel=1e-6)
    assert output.parts["loss_reg"].item() == 0.0
    expected_loss = 0.1 * output.parts["loss_spbc"] + 1.0 * output.parts["loss_ign"]
    assert output.loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    counts = {name: int(value) for name, value in output.counts.items()}
    assert counts == {"flagged": 3, "flagged_true_fn": 1, "false_negatives": 1, "rejected": 3, "rejected_true_fn": 1,
                      "entries": 6}


def test_without_lat_the_gap_alone_decides():
    # unannotated with gap > 0.3: [F, T, T], [T, T, F] -> 4 rejected, kept: the two positives
    output = make_method(lat=False).step(ImageIsCAM(), batch(), epoch=1)
    kept = [bce_positive(0.75), bce_positive(2.5)]
    assert output.parts["loss_ign"].item() == pytest.approx(sum(kept) / 2, rel=1e-6)
    assert int(output.counts["rejected"]) == 4


def test_signed_drop_flags_only_logits_that_fall():
    # drops z_weak - z_masked: [0.25, 0.5, 1.5], [1.0, 0.5, 0.5], all falls here; make image 1's
    # class 0 rise instead by darkening its removed pixel: pixels [-4, 2], weak (-4 + 2) / 2 = -1,
    # masked (0 + 2) / 2 = 1
    step_batch = batch()
    step_batch["weak"][1, 0, 0, 0] = -4.0
    absolute = make_method(lat=False).step(ImageIsCAM(), step_batch, epoch=1)
    signed = make_method(lat=False, gap="drop").step(ImageIsCAM(), step_batch, epoch=1)
    # |4 - 6| = 2 > 0.3 flags it; a drop of -2 does not
    assert int(absolute.counts["flagged"]) == 4 and int(signed.counts["flagged"]) == 3


def test_during_warm_up_nothing_is_rejected_but_suspects_are_counted():
    output = make_method().step(ImageIsCAM(), batch(), epoch=0)
    weak = [[0.75, 1.0, 3.0], [2.0, 0.5, 2.5]]
    every_entry = [bce_positive(z) if observed else bce_negative(z)
                   for row, observed_row in zip(weak, OBSERVED.tolist()) for z, observed in zip(row, observed_row)]
    assert output.parts["loss_ign"].item() == pytest.approx(sum(every_entry) / 6, rel=1e-6)
    assert int(output.counts["rejected"]) == 0
    assert int(output.counts["flagged"]) == 3


def test_regulariser_is_the_mse_between_strong_and_weak_logits():
    step_batch = batch()
    step_batch["strong"] = IMAGES + 1.0  # every strong logit is one higher
    output = make_method(weight_reg=0.5).step(ImageIsCAM(), step_batch, epoch=1)
    assert output.parts["loss_reg"].item() == pytest.approx(1.0)


def test_batch_without_any_observed_positive_is_safe():
    method = make_method()
    method.thresholds.gap_lambda = 0.5  # an update would move the threshold
    step_batch = batch()
    step_batch["observed"] = torch.zeros(2, 3)
    output = method.step(ImageIsCAM(), step_batch, epoch=1)
    assert output.parts["loss_spbc"].item() == 0.0
    assert math.isfinite(output.loss.item())
    assert method.thresholds.gap_threshold.item() == pytest.approx(0.3)  # unchanged, not NaN
    assert int(output.counts["rejected"]) == 0  # full masks: every gap is 0


def test_threshold_ema_by_hand():
    thresholds = GapThresholds(num_classes=2, gap_lambda=0.9, avg_lambda=0.5)
    gap = torch.tensor([[0.4, 9.0], [7.0, 0.2]])
    logits = torch.tensor([[1.0, 3.0], [-1.0, 5.0]])
    positive = torch.tensor([[True, False], [False, True]])
    thresholds.update(gap, logits, positive, reduce_sum=lambda statistics: statistics)
    # gap: 0.9 * 0 + 0.1 * mean(0.4, 0.2); avg: 0.5 * 0 + 0.5 * column means (0, 4)
    assert thresholds.gap_threshold.item() == pytest.approx(0.03)
    assert thresholds.avg_threshold.tolist() == pytest.approx([0.0, 2.0])
    thresholds.update(gap, logits, positive, reduce_sum=lambda statistics: statistics)
    assert thresholds.gap_threshold.item() == pytest.approx(0.9 * 0.03 + 0.03)
    assert thresholds.avg_threshold.tolist() == pytest.approx([0.0, 3.0])


def test_bias_corrected_thresholds_are_the_mean_from_the_first_update():
    thresholds = GapThresholds(num_classes=2, gap_lambda=0.9, avg_lambda=0.5, bias_correction=True)
    gap = torch.tensor([[0.4, 9.0], [7.0, 0.2]])
    logits = torch.tensor([[1.0, 3.0], [-1.0, 5.0]])
    positive = torch.tensor([[True, False], [False, True]])
    thresholds.update(gap, logits, positive, reduce_sum=lambda statistics: statistics)
    assert thresholds.gap_threshold.item() == pytest.approx(0.03)  # the raw EMA, as without correction
    assert thresholds.gap().item() == pytest.approx(0.3)  # 0.03 / (1 - 0.9)
    assert thresholds.average().tolist() == pytest.approx([0.0, 4.0])
    thresholds.update(gap * 2, logits, positive, reduce_sum=lambda statistics: statistics)
    # (0.9 * 0.03 + 0.1 * 0.6) / (1 - 0.9^2)
    assert thresholds.gap().item() == pytest.approx((0.027 + 0.06) / 0.19)


def test_thresholds_are_saved_in_the_state_dict():
    method = make_method()
    state = method.state_dict()
    assert state["thresholds.gap_threshold"].item() == pytest.approx(0.3)
    assert state["thresholds.avg_threshold"].tolist() == pytest.approx([0.5, 0.6, 2.8])


def test_masked_pass_batchnorm_uses_batch_statistics_without_updating_running_ones():
    layer = nn.BatchNorm2d(1).train()
    images = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])
    with batchnorm_mode(layer, "batch"):
        normalised = layer(images)
    assert layer.running_mean.item() == 0.0 and layer.num_batches_tracked.item() == 0
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-6)  # its own batch mean
    assert layer.training and layer.track_running_stats
    with batchnorm_mode(layer, "eval"):
        assert torch.allclose(layer(images), images / math.sqrt(1 + layer.eps))  # running stats 0 and 1
    assert layer.training


def test_batched_views_give_the_same_step_when_the_network_has_no_batchnorm():
    step_batch = batch()
    step_batch["strong"] = IMAGES * 0.5
    separate = make_method().step(ImageIsCAM(), step_batch, epoch=1)
    together = make_method(batched_views=True).step(ImageIsCAM(), step_batch, epoch=1)
    assert together.loss.item() == pytest.approx(separate.loss.item(), rel=1e-6)
    assert together.parts["loss_reg"].item() == pytest.approx(separate.parts["loss_reg"].item(), rel=1e-6)
    assert separate.parts["loss_reg"].item() > 0


def test_masked_pass_keeps_no_graph_and_leaves_running_statistics_alone():
    network = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).train()
    model = ImageIsCAMAfter(network)
    logits = make_method().masked_logits(model, torch.randn(2, 3, 4, 4, requires_grad=True))
    assert logits.grad_fn is None and not logits.requires_grad
    assert network[1].num_batches_tracked.item() == 0 and network[1].running_mean.abs().sum().item() == 0


def test_masked_pass_runs_between_the_weak_and_the_strong_forward():
    """So that its activations are freed before the strong view's graph is built (peak memory)."""

    class Recording(ImageIsCAM):
        seen = []

        def forward(self, images, between=None):
            if not isinstance(images, (list, tuple)):
                self.seen.append(images)
            return super().forward(images, between)

    step_batch = batch()
    step_batch["strong"] = IMAGES * 0.5
    make_method().step(Recording(), step_batch, epoch=1)
    weak, masked, strong = Recording.seen
    assert torch.equal(weak, IMAGES) and torch.equal(strong, IMAGES * 0.5)
    assert torch.equal(masked[0, :, :, 1], torch.zeros(3, 1)) and torch.equal(masked[1, :, :, 0], torch.zeros(3, 1))
