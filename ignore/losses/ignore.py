"""IGNORE (ECCV 2024): reject the assume-negative loss of likely false negatives.

A label is a likely false negative when its logit drops sharply once the image is masked
down to the region of the observed positive (the information gap), SPEC section 2.
Only unknown labels (0) can be rejected: an observed negative (-1) always keeps its BCE against 0.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..data.views import denormalise, pixel_to_normalised
from ..errors import SPMLError
from .base import (FN_RATIOS, Method, Picture, StepOutput, bce, false_negatives, fn_counts, masked_mean,
                   observed_positive, unannotated)
from .calibration import FEATURES, RejectionCalibration
from .masking import outside_region_peak, positive_cam, positive_region_mask
from .registry import CAM_NORMALISATIONS, GAPS, MASKED_BATCHNORM_MODES, MASK_FILLS, RULES
from .rejection import REJECTIONS, rejected_entries
from .thresholds import GapThresholds

FILL_PIXELS = {"mean": None, "black": (0.0, 0.0, 0.0)}  # None: 0 after normalisation, the mean colour


@contextlib.contextmanager
def batchnorm_mode(model, mode):
    """BatchNorm behaviour for the masked pass.

    "batch": normalise with the masked batch's own statistics but leave the running
    statistics untouched (a masked image is mostly empty: running statistics of whole
    images distort its logits, SPEC's measured warning). "eval": running statistics.
    """
    layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    saved = [(layer.training, layer.track_running_stats) for layer in layers]
    for layer in layers:
        if mode == "batch":
            layer.train()
            layer.track_running_stats = False  # train-mode normalisation, no running update
        else:
            layer.eval()
    try:
        yield
    finally:
        for layer, (training, tracking) in zip(layers, saved):
            layer.train(training)
            layer.track_running_stats = tracking


class Ignore(Method):
    """IGNORE's step. `rejection` picks the rejected set: "gap" is the method, the others are
    its controls (rejection.py), registered as never_reject, random_reject, oracle_reject."""

    ratios = {**FN_RATIOS, "rejected_fraction": ("rejected", "entries"),
              "rejected_precision": ("rejected_true_fn", "rejected")}

    def __init__(self, config, num_classes, accelerator, rejection="gap", **context):
        super().__init__(config, num_classes, accelerator, **context)
        for key, allowed in (("masked_batchnorm", MASKED_BATCHNORM_MODES), ("cam_normalisation", CAM_NORMALISATIONS),
                             ("mask_fill", MASK_FILLS), ("gap", GAPS), ("rule", RULES)):
            if getattr(config, key) not in allowed:
                raise SPMLError(f"method.{key} must be one of {allowed}, got '{getattr(config, key)}'")
        assert rejection in REJECTIONS, rejection
        self.rejection = rejection
        self.views = ("weak", "strong") if config.strong_view else ("weak",)
        self.thresholds = GapThresholds(num_classes, config.gap_lambda, config.avg_lambda,
                                        config.threshold_bias_correction)
        self.calibration = RejectionCalibration(config.reject_probability)

    def step(self, model, batch, epoch):
        config = self.config
        weak = batch["weak"]
        positive = observed_positive(batch)
        masked = {}

        def masked_pass(weak_output):
            masked.update(zip(("area", "logits"), self.masked_pass(model, weak, weak_output["cam"], positive)))

        weak_output, strong_output = self.forward_views(model, batch, masked_pass)
        weak_logits = weak_output["logits"].float()
        strong_logits = strong_output["logits"].float()
        masked_logits = masked["logits"]
        drop = weak_logits.detach() - masked_logits  # > 0: the logit falls once the image is masked
        gap = drop.abs()
        rule_gap = gap if config.gap == "absolute" else drop
        # warm-up included and before the loss, as in the paper's code
        self.thresholds.update(rule_gap, weak_logits.detach(), positive,
                               lambda stats: self.accelerator.reduce(stats, reduction="sum"))

        above_average = weak_logits.detach() > self.thresholds.average()  # LAT
        unknown = unannotated(batch)  # only unknown labels can be false negatives
        scores = {"gap": rule_gap, "gap_lat": torch.where(above_average, rule_gap, float("-inf")),
                  "absolute_gap": gap, "drop": drop, "logit": weak_logits.detach(),
                  "outside_peak": self.outside_peak(weak_output["cam"], positive)}
        if config.rule == "calibrated":
            scores["calibrated"] = self.calibration.log_odds(scores)
            suspect = self.calibration.suspects(scores["calibrated"]) & unknown
            suspect = self.calibration.within_budget(scores["calibrated"], suspect, unknown, self.accelerator)
        else:
            suspect = (rule_gap > self.thresholds.gap()) & unknown
            if config.lat:
                suspect &= above_average
        reject = rejected_entries(self.rejection, suspect, unknown, batch, epoch, self.seed)
        if epoch < config.warm_up:
            reject = torch.zeros_like(reject)

        loss_spbc = masked_mean(bce(weak_logits, torch.ones_like(weak_logits)), positive)
        loss_ign = masked_mean(bce(strong_logits, positive.float()), ~reject)
        loss_reg = F.mse_loss(strong_logits, weak_logits) if config.strong_view else weak_logits.new_zeros(())
        loss = config.weight_spbc * loss_spbc + config.weight_ign * loss_ign + config.weight_reg * loss_reg
        parts = {
            "loss_spbc": loss_spbc, "loss_ign": loss_ign, "loss_reg": loss_reg,
            "gap_threshold": self.thresholds.gap(), "avg_threshold_mean": self.thresholds.average().mean(),
            "masked_area": masked["area"],
        }
        true_fn = false_negatives(batch)  # diagnostics only
        counts = {**fn_counts(suspect, batch), "rejected": reject.sum(),
                  "rejected_true_fn": (reject & true_fn).sum(),
                  "entries": torch.tensor(reject.numel(), device=reject.device)}
        # Scores of the unannotated labels as false negatives (`scores` above): the rule's gap
        # (method.gap) alone and gated by LAT (labels below their class average rank last), both gap
        # definitions, the weak logit itself for comparison (does the gap know more than the logit?),
        # the class's CAM peak outside the kept region, and under rule=calibrated the fitted log-odds.
        fn_scores = {"scores": scores, "candidates": unknown, "targets": true_fn}
        return StepOutput(loss, weak_logits, parts, counts, fn_scores)

    def masked_pass(self, model, images, cam, positive):
        """(masked area, masked images' logits): each image masked to its observed positive's CAM region."""
        mask = positive_region_mask(cam, positive, images.shape[-2:], self.config.cam_threshold,
                                    self.config.cam_normalisation)
        return mask.mean(), self.masked_logits(model, self.masked_images(images, mask))

    def outside_peak(self, cam, positive):
        """(B, C): each class's CAM peak outside the region the masked pass keeps (masking.py)."""
        return outside_region_peak(cam, positive, self.config.cam_threshold, self.config.cam_normalisation)

    @torch.no_grad()
    def calibrate(self, model, val_loader):
        """rule=calibrated: score the validation images as the step scores the training images
        (the weak logits and the masked images' logits, BatchNorm on each batch's own statistics
        as in training, no running statistics touched), gather them from every process and fit
        the false-negative probability (calibration.py) identically everywhere."""
        if self.config.rule != "calibrated":
            return {}
        network = self.accelerator.unwrap_model(model)
        was_training = network.training
        network.train()
        scores, false_negative = {name: [] for name in FEATURES}, []
        with batchnorm_mode(network, "batch"):
            for batch in val_loader:
                images, positive = batch["image"], observed_positive(batch)
                if images.shape[0] < 2:  # batch statistics need two images (equal on every process)
                    continue
                with self.accelerator.autocast():
                    output = network(images)
                weak_logits = output["logits"].float()
                _, masked_logits = self.masked_pass(model, images, output["cam"], positive)
                batch_scores = {"drop": weak_logits - masked_logits, "logit": weak_logits,
                                "outside_peak": self.outside_peak(output["cam"], positive)}
                gathered = self.accelerator.gather_for_metrics(
                    ([batch_scores[name] for name in FEATURES], false_negatives(batch), unannotated(batch)))
                values, true_fn, candidates = gathered
                candidates = candidates.cpu()
                for name, value in zip(FEATURES, values):
                    scores[name].append(value.cpu()[candidates])
                false_negative.append(true_fn.cpu()[candidates])
        network.train(was_training)
        return self.calibration.fit({name: torch.cat(values) for name, values in scores.items()},
                                    torch.cat(false_negative))

    def forward_views(self, model, batch, masked_pass):
        """(weak output, strong output), with `masked_pass(weak output)` run in between when
        the views have separate forwards: the masked pass's activations then share memory
        with the weak graph only, not with both."""
        if not self.config.strong_view:
            weak_output = model(batch["weak"])
            masked_pass(weak_output)
            return weak_output, weak_output
        if self.config.batched_views:  # one forward: BatchNorm sees both views
            both = model(torch.cat([batch["weak"], batch["strong"]]))
            weak_output, strong_output = ({name: value.chunk(2)[half] for name, value in both.items()} for half in (0, 1))
            masked_pass(weak_output)
            return weak_output, strong_output
        return model([batch["weak"], batch["strong"]], between=masked_pass)

    @torch.no_grad()
    def pictures(self, model, batch):
        """One row per image: the image, its observed positive's CAM over it, the masked image."""
        network = self.accelerator.unwrap_model(model)
        was_training = network.training
        network.eval()
        images = batch["weak"]
        positive = observed_positive(batch)
        with self.accelerator.autocast():
            cam = network(images)["cam"].float()
        network.train(was_training)
        heat = positive_cam(cam, positive, images.shape[-2:], self.config.cam_normalisation)
        mask = (heat > self.config.cam_threshold).float()  # the step's mask, from the same map
        pixels = denormalise(images.float(), self.normalisation)
        overlay = 0.5 * pixels + 0.5 * heat * torch.tensor([1.0, 0.2, 0.0], device=heat.device)[:, None, None]
        masked = denormalise(self.masked_images(images.float(), mask), self.normalisation)
        panels = torch.stack([pixels, overlay, masked], dim=1).cpu()
        observed = [torch.nonzero(row).flatten().tolist() for row in positive.cpu()]
        return {"ignore/image_cam_masked": Picture(panels, ("image", "CAM of the\nobserved positive", "masked image"),
                                                   observed)}

    def masked_images(self, images, mask):
        """Images with the pixels outside `mask` replaced by `method.mask_fill`."""
        mask = mask.to(images.dtype)
        fill_pixel = FILL_PIXELS[self.config.mask_fill]
        if fill_pixel is None:
            return images * mask
        return images * mask + pixel_to_normalised(images, self.normalisation, fill_pixel) * (1 - mask)

    def masked_logits(self, model, masked_images):
        """Logits of the masked images: no graph, unwrapped from DDP, BatchNorm as configured."""
        network = self.accelerator.unwrap_model(model)
        with torch.no_grad(), self.accelerator.autocast(), batchnorm_mode(network, self.config.masked_batchnorm):
            return network(masked_images)["logits"].float()
