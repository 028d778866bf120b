"""The train split streamed from Parquet shards (shards.py): each process reads its own shards.

Order. Epoch e draws a permutation of the shards from (seed, e); process r of W reads its entries r, r + W, ...
in that order, and each shard's records in a permutation drawn from (seed, e, shard). Neither permutation depends
on the process count, the worker count or a resume; W deals them out.
Every process yields the same number of records an epoch, so every process takes the same number of steps:
the rows of the floor(S / W) smallest shards, the least any process can be dealt, rounded down to its batch.
A process stops there, and the rest of its last shard (and of an extra shard, when W does not divide S) is left
out of that epoch; a shard is never read by two processes, so no row is seen twice in an epoch.
Reading. The sampler reads one shard at a time in the main process (the next one in a thread meanwhile) and
hands each record (its bytes and labels) to the DataLoader's workers, which decode it and draw its views from
(seed, epoch, row): the batches are the same for any number of workers. A resumed epoch starts the sampler that
many records in, passing over whole shards by their sizes in the index, unread.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from accelerate.data_loader import DataLoaderShard
from torch.utils.data import Dataset, Sampler

from ..errors import SPMLError
from .shards import read_shard
from .torch_dataset import decoded_item, seeded_views


def shard_order(seed, epoch, num_shards):
    """The epoch's permutation of the shard numbers."""
    return np.random.default_rng([seed, epoch, 0]).permutation(num_shards)


def record_order(seed, epoch, shard, num_records):
    """The epoch's permutation of one shard's records."""
    return np.random.default_rng([seed, epoch, 1, shard]).permutation(num_records)


def shards_of_process(seed, epoch, num_shards, rank, world_size):
    """The shards process `rank` of `world_size` reads in `epoch`, in reading order."""
    return shard_order(seed, epoch, num_shards)[rank::world_size].tolist()


def rows_per_process(sizes, world_size, batch_size):
    """The records every process yields in an epoch: the rows of the floor(S / W) smallest shards (the least any
    process can be dealt), rounded down to the batch."""
    guaranteed = sum(sorted(sizes)[:len(sizes) // world_size])
    return guaranteed // batch_size * batch_size


class ShardStream(Sampler):
    """This process's records of an epoch as DataLoader keys (epoch, row, image entry, labels, observed)."""

    def __init__(self, index, seed, rank, world_size, batch_size):
        if len(index.files) < world_size:
            raise SPMLError(f"data.train_shards: {index.folder} holds {len(index.files)} shards for {world_size} "
                            f"processes: each process reads shards of its own, so write at least {world_size}")
        self.index, self.seed, self.rank, self.world_size = index, seed, rank, world_size
        self.length = rows_per_process(index.sizes, world_size, batch_size)
        self.epoch = self.skip = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def skip_records(self, count):
        """The next iteration starts `count` records into the epoch."""
        self.skip = count

    def __len__(self):
        return self.length

    def reading_plan(self, epoch, skip):
        """[(shard, first, count)]: the shards to read this epoch, and which of each one's records (in the
        epoch's record order) to yield, `skip` records in; the shards wholly before `skip` are not in it."""
        plan, to_skip, to_yield = [], skip, self.length - skip
        for shard in shards_of_process(self.seed, epoch, len(self.index.files), self.rank, self.world_size):
            size = self.index.sizes[shard]
            if to_yield <= 0:
                break
            if to_skip < size:
                count = min(size - to_skip, to_yield)
                plan.append((shard, to_skip, count))
                to_yield -= count
            to_skip = max(to_skip - size, 0)
        return plan

    def __iter__(self):
        epoch, plan = self.epoch, self.reading_plan(self.epoch, self.skip)
        self.skip = 0
        # the next shard is read in a thread while this one's records go out: no pause at each shard
        with ThreadPoolExecutor(max_workers=1) as reader:
            upcoming = reader.submit(read_shard, self.index, plan[0][0]) if plan else None
            for position, (shard, first, count) in enumerate(plan):
                records = upcoming.result()
                if position + 1 < len(plan):
                    upcoming = reader.submit(read_shard, self.index, plan[position + 1][0])
                where = self.index.folder / self.index.files[shard]
                for record in record_order(self.seed, epoch, shard, len(records.rows))[first:first + count]:
                    entry = {"bytes": records.images[record], "path": f"{where} record {record}"}
                    yield epoch, int(records.rows[record]), entry, records.labels[record], records.observed[record]


class StreamedRecords(Dataset):
    """A streamed record (a ShardStream key) as {"weak", "strong"?, "labels", "observed", "index"}, as
    SPMLImageDataset makes a row: views drawn from (seed, epoch, row), index the dataset row."""

    def __init__(self, num_rows, views, bad_images, seed):
        self.num_rows, self.views, self.bad_images, self.seed = num_rows, views, bad_images, seed

    def __len__(self):
        return self.num_rows

    def __getitem__(self, key):
        epoch, row, entry, labels, observed = key
        with seeded_views(self.seed, epoch, row):
            return decoded_item(None, entry, self.views, self.bad_images,
                                labels=torch.tensor(labels, dtype=torch.float32),
                                observed=torch.tensor(observed, dtype=torch.float32), index=row)


class StreamedLoader(DataLoaderShard):
    """This process's share of the streamed split, batches on its device: Accelerate's loader, not prepared again
    (that would deal each batch out among the processes a second time)."""

    def skip_first_batches(self, num_batches):
        """This loader, its next epoch starting after `num_batches` batches, the shards before them unread."""
        self.batch_sampler.sampler.skip_records(num_batches * self.batch_size)
        return self

    def describe(self):
        """One line: the shards, what each process reads, and what an epoch leaves out."""
        stream = self.batch_sampler.sampler
        total, read = stream.index.num_rows, stream.length * stream.world_size
        left_out = f"{total - read} rows of {total} left out of each epoch (the shards and batches do not divide " \
                   "evenly among the processes)" if read < total else "every row once an epoch"
        return (f"train split streamed from {len(stream.index.files)} shards in {stream.index.folder}: "
                f"{stream.length} rows a process and epoch, {left_out}")


def streamed_train_loader(index, views, bad_images, batch_size, seed, accelerator, **loader_settings):
    """The streamed train loader of this process (accelerator.process_index of num_processes)."""
    stream = ShardStream(index, seed, accelerator.process_index, accelerator.num_processes, batch_size)
    return StreamedLoader(StreamedRecords(index.num_rows, views, bad_images, seed), device=accelerator.device,
                          _non_blocking=accelerator.non_blocking, sampler=stream, batch_size=batch_size,
                          drop_last=True, **loader_settings)
