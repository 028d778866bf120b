"""Per-image state (one row per training image) that every rank keeps identical.

Each rank computes new rows for the images of its own batch; `write_shared_rows` gathers
the (row, values) pairs of every rank and writes all of them into each rank's buffers, so
every rank ends the step with the same matrices. The buffers belong to the method, which
the trainer checkpoints: resume restores them, and since they are indexed by dataset row
(not by position in a batch), a different number of processes reads the same rows.

Where the tables live (`train.row_state_dir`): by default each process holds its own copy in
its memory (on its device). With a folder, each machine holds one copy, a file in that folder
that all its processes map (`new_table`); each process still writes every gathered row into it
itself, so it always reads its own writes, and the processes of a machine write the same
values, so their order does not matter. The step's rows are read and written on the host.
"""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate.utils import gather_object

from ..errors import SPMLError

BLOCK_BYTES = 64 * 2**20  # a mapped table is filled and compared this much at a time: bounded memory


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
        buffer.index_copy_(0, target_rows.to(buffer.device),
                           part.reshape(-1, *buffer.shape[1:]).to(buffer.device, buffer.dtype))


def read_rows(table, rows):
    """table[rows] on the device of `rows`: a mapped table stays in the host's memory."""
    return table[rows.to(table.device)].to(rows.device)


def is_mapped(tensor):
    """Whether `tensor` is a table mapped from a file (new_table with a folder)."""
    return tensor.device.type == "cpu" and tensor.untyped_storage().filename is not None


def new_table(accelerator, folder, shape, dtype=torch.float32, fill=None):
    """A (rows, ...) table of `dtype`, its rows fill(start, stop) in order (None: zeros).

    folder "" (`train.row_state_dir`'s default): a tensor in this process's memory. Otherwise the
    table is a file in `folder`, written by the first process of each machine and then mapped by
    all of them, so the machine's processes share one copy. The file is deleted once every process
    has mapped it: its memory or disk space goes back when the last process ends, killed or not, and
    no other run ever opens it. A checkpoint holds the contents.
    """
    if not folder:
        return torch.zeros(shape, dtype=dtype) if fill is None else fill(0, shape[0]).to(dtype)
    first_on_machine = accelerator.local_process_index == 0
    table = path = None
    if first_on_machine:
        path = table_file(Path(folder), shape, dtype)
        table = map_file(path, shape, dtype)
        if fill is not None:
            for start, stop in row_blocks(table):
                table[start:stop] = fill(start, stop)
    # the first process of this machine is global rank process_index - local_process_index (torchrun's numbering)
    paths = gather_object([path]) if accelerator.num_processes > 1 else [path]
    machine_path = paths[accelerator.process_index - accelerator.local_process_index]
    if not first_on_machine:
        table = map_file(machine_path, shape, dtype)
    accelerator.wait_for_everyone()
    if first_on_machine:
        os.unlink(path)
    return table


def table_file(folder, shape, dtype):
    """A new file of the table's size in `folder`, its space reserved (a mapped write with no room would kill the
    process without a word); one line naming train.row_state_dir if the folder cannot take it."""
    size = torch.Size(shape).numel() * dtype.itemsize
    if folder.exists() and not folder.is_dir():
        raise SPMLError(f"train.row_state_dir: {folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, path = tempfile.mkstemp(prefix="row-table-", suffix=".bin", dir=folder)
    except OSError as error:
        raise SPMLError(f"train.row_state_dir: cannot create a table in {folder} ({error.strerror})") from None
    try:
        if size:
            os.posix_fallocate(handle, 0, size)
    except OSError as error:
        os.unlink(path)
        raise SPMLError(f"train.row_state_dir: {folder} has no room for a table of {size / 1e9:.3g} GB "
                        f"({error.strerror})") from None
    finally:
        os.close(handle)
    return path


def map_file(path, shape, dtype):
    return torch.from_file(str(path), shared=True, size=torch.Size(shape).numel(), dtype=dtype).view(shape)


def row_blocks(table):
    """(start, stop) of consecutive row blocks of `table`, each at most BLOCK_BYTES (one row at least)."""
    rows = len(table)
    per_row = table[0].numel() * table.element_size() if rows else 1
    step = max(1, BLOCK_BYTES // max(per_row, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


@contextmanager
def whole_table_update(accelerator, table):
    """Around an update that reads and writes whole tables, not the step's rows: yields whether this process
    makes it. In memory, each process updates its own copy. Mapped, the first process of each machine does
    while the others wait: a process that read a table after another had written part of it would compute
    something else."""
    mapped = is_mapped(table)
    if mapped:
        accelerator.wait_for_everyone()  # every process has written its last step's rows
    yield not mapped or accelerator.local_process_index == 0
    if mapped:
        accelerator.wait_for_everyone()  # the update is written before any process reads the tables again
