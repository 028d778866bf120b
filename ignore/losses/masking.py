"""The masked image of SPEC 2.4: keep the CAM region of each image's observed positive."""
import torch
import torch.nn.functional as F


def normalise_per_image(cam):
    """Min-max normalise each map (B, h, w) over its own pixels (not across the batch)."""
    flat = cam.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp(min=1e-12)).view_as(cam)


def normalise_across_batch(maps, has_positive):
    """The authors' rule (SPEC 2, defect 1): at each pixel, (map - min) / max over the images
    of the batch that have a positive. One image's mask then depends on the others, and a
    batch of one keeps nothing. Kept as an explicit option because the method was tuned with
    the large masks it gives.

    maps: (B, h, w) raw positive CAMs; has_positive: (B,) bool. A pixel whose max is exactly 0
    gives 0/0 there (nothing kept) as in their code, or x/0 = inf (kept), clipped to 1.
    """
    fill = torch.tensor(float("inf"), device=maps.device)
    low = torch.where(has_positive[:, None, None], maps, fill).amin(dim=0)
    high = torch.where(has_positive[:, None, None], maps, -fill).amax(dim=0)
    return torch.nan_to_num((maps - low) / high, nan=0.0, posinf=1.0, neginf=0.0)


def positive_cam(cam, observed_positive, image_size, normalisation="image"):
    """(B, 1, H, W): the normalised CAM of the observed positive, upsampled to the image.

    cam: (B, C, h, w); observed_positive: (B, C) bool. With several observed positives the
    maximum (the union of their regions) is taken. An image without an observed positive
    gets 1 everywhere, so its mask keeps all pixels. normalisation: "image" (each map over
    its own pixels) or "authors" (`normalise_across_batch`).
    """
    cam = cam.detach().float()
    has_positive = observed_positive.any(dim=1)
    if normalisation == "authors":
        raw = cam.masked_fill(~observed_positive[:, :, None, None], float("-inf")).amax(dim=1)
        positive = normalise_across_batch(raw, has_positive)
    else:
        normalised = normalise_per_image(cam.flatten(0, 1)).view_as(cam)
        # -inf on the other classes so the maximum picks the observed positives only
        positive = normalised.masked_fill(~observed_positive[:, :, None, None], float("-inf")).amax(dim=1)
    positive = torch.where(has_positive[:, None, None], positive, torch.ones_like(positive))
    return F.interpolate(positive[:, None], size=image_size, mode="bilinear", align_corners=False)


def positive_region_mask(cam, observed_positive, image_size, threshold, normalisation="image"):
    """(B, 1, H, W) float mask: 1 where `positive_cam` exceeds threshold."""
    return (positive_cam(cam, observed_positive, image_size, normalisation) > threshold).float()


def outside_region_peak(cam, observed_positive, threshold, normalisation="image"):
    """(B, C): each class's highest CAM value outside the region the masked image keeps, read at the
    CAM's own resolution; no second forward. A class that another object shows lights up outside
    the observed positive's region. An image whose region covers every cell gets each class's lowest value.
    """
    cam = cam.detach().float()
    inside = (positive_cam(cam, observed_positive, cam.shape[-2:], normalisation) > threshold).expand_as(cam)
    outside = cam.masked_fill(inside, float("-inf")).flatten(2).amax(2)
    return torch.where(torch.isinf(outside), cam.flatten(2).amin(2), outside)
