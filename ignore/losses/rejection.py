"""Which unannotated labels IGNORE's step stops training on: its own rule and three controls.

The controls run through the same step with the same losses, so that only the rejected set
differs: `never` (nothing), `random` (as many as the information gap flags, drawn uniformly
among the unannotated labels) and `oracle` (exactly the false negatives, read from the
clean labels: the ceiling of any rejection, and the only rule that reads them).
"""
import torch

from .base import false_negatives

REJECTIONS = ("gap", "never", "random", "oracle")
_MASK32 = 0xFFFFFFFF


def _hash32(values):
    """A 32-bit integer mix of int64 tensors with values in [0, 2^32); stays below 2^59, no overflow."""
    for _ in range(2):
        values = (((values >> 16) ^ values) * 0x45D9F3B) & _MASK32
    return (values >> 16) ^ values


def entry_uniforms(seed, epoch, rows, num_classes):
    """(B, C) uniforms in [0, 1), a function of (seed, epoch, dataset row, class) alone: the
    same on any number of processes or workers and after a resume, with no RNG state to keep."""
    key = _hash32(torch.tensor(seed & _MASK32, device=rows.device))
    key = _hash32(key ^ (epoch & _MASK32))
    entries = rows.long()[:, None] * num_classes + torch.arange(num_classes, device=rows.device)
    return _hash32(key ^ (entries & _MASK32)).double().div(2.0 ** 32).float()


def choose_uniformly(count, candidates, uniforms):
    """`count` (0-d tensor) of the `candidates` (B, C) bool, chosen by the smallest uniforms.

    Ranks instead of a data-dependent top-k: no host-device synchronisation.
    """
    scores = torch.where(candidates, uniforms, torch.full_like(uniforms, 2.0)).flatten()
    ranks = torch.empty_like(scores, dtype=torch.long)
    ranks[scores.argsort()] = torch.arange(scores.numel(), device=scores.device)
    return (ranks.view_as(candidates) < count) & candidates


def rejected_entries(rule, flagged, unannotated, batch, epoch, seed):
    """The (B, C) bool entries whose assume-negative loss is dropped (before the warm-up gate).

    flagged: what the information gap flags (already limited to unannotated labels).
    """
    if rule == "gap":
        return flagged
    if rule == "never":
        return torch.zeros_like(flagged)
    if rule == "random":
        uniforms = entry_uniforms(seed, epoch, batch["index"], flagged.shape[1])
        return choose_uniformly(flagged.sum(), unannotated, uniforms)
    return false_negatives(batch)  # "oracle" (the rule is checked when the method is built)
