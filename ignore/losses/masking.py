"""The masked image of SPEC 2.4: keep the CAM region of each image's observed positive."""
import torch
import torch.nn.functional as F


def normalise_per_image(cam):
    """Min-max normalise each map (B, h, w) over its own pixels (not across the batch)."""
    flat = cam.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp(min=1e-12)).view_as(cam)


def positive_cam(cam, observed_positive, image_size):
    """(B, 1, H, W): the per-image normalised CAM of the observed positive, upsampled to the image.

    cam: (B, C, h, w); observed_positive: (B, C) bool. With several observed positives the
    maximum (the union of their regions) is taken. An image without an observed positive
    gets 1 everywhere, so its mask keeps all pixels.
    """
    cam = cam.detach().float()
    normalised = normalise_per_image(cam.flatten(0, 1)).view_as(cam)
    # -inf on the other classes so the maximum picks the observed positives only
    positive = normalised.masked_fill(~observed_positive[:, :, None, None], float("-inf")).amax(dim=1)
    positive = torch.where(observed_positive.any(dim=1)[:, None, None], positive, torch.ones_like(positive))
    return F.interpolate(positive[:, None], size=image_size, mode="bilinear", align_corners=False)


def positive_region_mask(cam, observed_positive, image_size, threshold):
    """(B, 1, H, W) float mask: 1 where `positive_cam` exceeds threshold."""
    return (positive_cam(cam, observed_positive, image_size) > threshold).float()
