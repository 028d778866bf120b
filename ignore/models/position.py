"""The 2-D sine position embedding of DETR and Query2Label: each cell's row and column,
scaled to (0, 2*pi], at geometric frequencies, so that attention can tell the cells apart."""
import math

import torch


def sine_position_embedding(height, width, dim, device, temperature=10000.0):
    """(height * width, dim) in row-major cell order: the first dim/2 channels encode the row,
    the last dim/2 the column, each as sin/cos pairs. dim must be a multiple of 4."""
    pairs = dim // 4
    frequencies = temperature ** (-torch.arange(pairs, device=device, dtype=torch.float32) / pairs)

    def encode(count):
        # (cell + 1) / count * 2 pi: the position relative to the map, whatever its size
        angles = (torch.arange(1, count + 1, device=device, dtype=torch.float32) / count * 2 * math.pi)[:, None]
        angles = angles * frequencies
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (count, dim/2)

    rows = encode(height)[:, None].expand(height, width, dim // 2)
    columns = encode(width)[None].expand(height, width, dim // 2)
    return torch.cat([rows, columns], dim=-1).flatten(0, 1)
