"""Per-image state (one row per training image) that every rank keeps identical.

Each rank computes new rows for the images of its own batch; `write_shared_rows` gathers
the (row, values) pairs of every rank and writes all of them into each rank's buffers, so
every rank ends the step with the same matrices. The buffers belong to the method, which
the trainer checkpoints: resume restores them, and since they are indexed by dataset row
(not by position in a batch), a different number of processes reads the same rows.
"""
import torch


def gather_rows(accelerator, rows, values):
    """Every rank's (rows (B,), values (B, K)) in rank order, one set for all ranks: (G,), (G, K).

    Packed into one float64 tensor (exact for float32 values and row numbers) for a single
    collective; ranks with shorter batches (skipped images) are padded with row -1.
    """
    packed = torch.cat([rows.double()[:, None], values.double()], dim=1)
    packed = accelerator.pad_across_processes(packed, dim=0, pad_index=-1)
    packed = accelerator.gather(packed)
    return packed[:, 0].long(), packed[:, 1:]


def first_writers(rows):
    """For each gathered entry, the position of the entry whose values its row receives.

    A row can appear twice in one step (on two ranks, or padding duplicates); the first
    occurrence in rank order wins, on every rank alike, so no row is written twice with
    different values. Padding (row -1) points at position 0, a real row, and rewrites it
    with its own values. No data-dependent shapes: no host-device synchronisation.
    """
    valid = rows >= 0
    same = (rows[:, None] == rows[None, :]) & valid[None, :]
    return same.float().argmax(dim=1)  # argmax returns the first maximum; all-False rows give 0


@torch.no_grad()
def write_shared_rows(accelerator, rows, buffers, values):
    """Write `values` (list of (B, ...) tensors, one per buffer) at `rows` of `buffers` (N, ...) on
    every rank, with the other ranks' rows of the same step."""
    widths = [value[0].numel() for value in values]
    flat = torch.cat([value.reshape(len(rows), -1).double() for value in values], dim=1)
    every_row, every_value = gather_rows(accelerator, rows, flat)
    source = first_writers(every_row)
    target_rows, every_value = every_row[source], every_value[source]
    for buffer, part in zip(buffers, every_value.split(widths, dim=1)):
        buffer.index_copy_(0, target_rows, part.reshape(-1, *buffer.shape[1:]).to(buffer.dtype))
