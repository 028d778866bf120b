"""Whether the processes of a launch hold the same state, bit for bit: what DDP's averaged gradients keep for the
weights and the all-reduced statistics for IGNORE's thresholds."""
import torch
from accelerate.utils import broadcast


def identical_across_ranks(accelerator, tensors):
    """Whether every rank holds the same bits in `tensors` as rank 0 (None: no tensors). Rank 0's bytes are
    broadcast and each rank compares its own: two copies on each rank, where a gather would hold one per rank."""
    if not tensors:
        return None
    mine = torch.cat([tensor.detach().contiguous().flatten().view(torch.uint8) for tensor in tensors])
    rank0 = broadcast(mine.clone())
    differing = accelerator.reduce((mine != rank0).sum(), reduction="sum")
    return differing.item() == 0
