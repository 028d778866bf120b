"""BoostLU's boosted CAM (Kim et al., CVPR 2023): the positive values of the class activation
maps multiplied by alpha before the global average, in training and at inference."""
import torch

EXPORT_KEY = "positive_cam_boost"  # config.json of an export: alpha, absent = plain logits


def boosted_logits(cam, alpha):
    """(B, C, h, w) CAM -> (B, C) logits; alpha = 1 gives the model's own logits."""
    return torch.where(cam > 0, cam * alpha, cam).mean(dim=(2, 3))


def export_logits(output, info):
    """The logits an exported model scores with: boosted when its export says so."""
    alpha = info.get(EXPORT_KEY)
    return output["logits"] if alpha is None else boosted_logits(output["cam"].float(), alpha)
