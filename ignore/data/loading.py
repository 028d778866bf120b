"""From the data config to the three DataLoaders the trainer prepares."""
import os
import signal
import threading
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..errors import SPMLError
from .demo import ensure_demo_dataset
from .format import load_dataset
from .shards import open_shards
from .streaming import StreamedLoader, streamed_train_loader
from .torch_dataset import EpochShuffleSampler, SPMLImageDataset, collate_skipping
from .views import eval_view, strong_view, weak_view


def load_spml_data(data_config, accelerator):
    """The configured dataset, or the built-in demo (built once, by the main process); with data.train_shards,
    the index of its streamed train split (checked against the dataset's) in `train_shards`."""
    if data_config.train_shards and data_config.train_subset:
        raise SPMLError("data.train_subset cannot be combined with data.train_shards: the shards hold the whole "
                        "train split")
    if data_config.image_column or data_config.label_column:
        from .bring_your_own import load_hf_dataset  # only for a bring-your-own dataset

        data = load_hf_dataset(Path(data_config.path), data_config.image_column, data_config.label_column)
    elif data_config.path:
        data = load_dataset(Path(data_config.path), data_config.image_root or None)
    else:
        with accelerator.main_process_first():
            path = ensure_demo_dataset(seed=data_config.demo_seed, layout=data_config.demo)
        data = load_dataset(path, data_config.image_root or None)
    if data_config.train_shards:
        data.train_shards = open_shards(Path(data_config.train_shards), data)
    return data


def training_rows(data, data_config):
    """The training split the loader reads: all of it, or its first data.train_subset rows."""
    train_split = data.splits["train"]
    if data_config.train_subset:
        train_split = train_split.select(range(min(data_config.train_subset, len(train_split))))
    return train_split


def build_loaders(data, data_config, method_views, batch_size, seed, normalisation, accelerator=None):
    """Train loader (shuffled by (seed, epoch), the method's views) and val/test loaders.

    A streamed train split (data.train_shards) gets this process's StreamedLoader, already on the accelerator's
    device; any other loader is for `accelerator.prepare` (prepared_train_loader)."""
    size = data_config.image_size
    train_views = {"weak": weak_view(size, normalisation)}
    if "strong" in method_views:
        train_views["strong"] = strong_view(size, normalisation)
    workers = data_config.num_workers
    common = dict(num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                  collate_fn=collate_skipping, worker_init_fn=leave_sigterm_to_the_main_process)
    if data.train_shards is not None:
        train_loader = streamed_train_loader(data.train_shards, train_views, data_config.bad_images, batch_size, seed,
                                             accelerator, **common)
    else:
        train_set = SPMLImageDataset(training_rows(data, data_config), data.image_root, train_views,
                                     data_config.bad_images, seed)
        # drop_last: a batch of one image would break BatchNorm's batch statistics
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=EpochShuffleSampler(len(train_set), seed),
                                  drop_last=True, **common)
    eval_loaders = [
        DataLoader(SPMLImageDataset(data.splits[name], data.image_root, {"image": eval_view(size, normalisation)},
                                    data_config.bad_images), batch_size=batch_size, shuffle=False, **common)
        for name in ("val", "test")
    ]
    return train_loader, *eval_loaders


def prepared_train_loader(accelerator, train_loader):
    """The train loader as the loop reads it: prepared by Accelerate (its batches dealt out among the processes),
    or a StreamedLoader as it is (each process already reads its own shards)."""
    return train_loader if isinstance(train_loader, StreamedLoader) else accelerator.prepare(train_loader)


def leave_sigterm_to_the_main_process(worker_id):
    """A scheduler sends SIGTERM to every process of the job; a worker it ended would stop the run with an
    error before the main process checkpoints (training/preemption.py). So a worker ends on a SIGTERM from its
    own main process only (multiprocessing's, as that process exits): a handler cannot see the sender, a
    thread waiting for the blocked signal can."""
    main_process = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # this thread and the ones it starts

    def end_on_sigterm_from_the_main_process():
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != main_process:
            pass
        os._exit(0)  # as torch's own worker handler does on its main process's SIGTERM: any other exit is a failure

    threading.Thread(target=end_on_sigterm_from_the_main_process, daemon=True).start()


def preview_batch(data, data_config, normalisation, count=8):
    """The first `count` validation images, evaluation view, as a batch for TensorBoard pictures."""
    split = data.splits["val"].select(range(min(count, len(data.splits["val"]))))
    dataset = SPMLImageDataset(split, data.image_root, {"weak": eval_view(data_config.image_size, normalisation)})
    return collate_skipping([dataset[index] for index in range(len(dataset))])
