"""Whether the processes of a launch hold the same state, bit for bit: what DDP's averaged gradients keep for the
weights and the all-reduced statistics for IGNORE's thresholds."""
import torch
from accelerate.utils import broadcast

from ..losses import row_state


def identical_across_ranks(accelerator, tensors):
    """Whether every rank holds the same bits in `tensors` as rank 0 (None: no tensors). Rank 0's bytes are
    broadcast a block at a time and each rank compares its own: a per-image table mapped from a file never travels
    or sits in memory whole, and no rank holds more than two blocks."""
    if not tensors:
        return None
    differing = torch.zeros((), dtype=torch.long, device=accelerator.device)
    for tensor in tensors:
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        for start in range(0, flat.numel(), row_state.BLOCK_BYTES):
            mine = flat[start:start + row_state.BLOCK_BYTES].to(accelerator.device)
            differing += (mine != broadcast(mine.clone())).sum()
    return accelerator.reduce(differing, reduction="sum").item() == 0
