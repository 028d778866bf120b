"""Per-image class scores from a frozen teacher: computed once per training row, cached beside the dataset,
and the same table on every rank.

A teacher is any object with
    scores(images) -> (N, C) tensor in [0, 1]: images a list of N RGB PIL images, C the dataset's classes in order
    name (optional): names its cache file; change it whenever its scores would change.
`method.teacher` builds one: a built-in name (registry.TEACHERS, built by the class's `from_settings(config,
images, device)`), or `module:attribute` of your own, called as `attribute(class_names, device)` (a CLIP model,
say). A built-in that reads the clean labels instead of the images (the noisy oracle) has `scores_of_rows(rows)`.

The table of the whole training split is kept in `<dataset>/teacher_scores/<name>-<fingerprint>.npy`, NaN where
a row was never scored; a run scores only the rows it trains on that are missing. The fingerprint is the split's
(the datasets library's), so a rewritten dataset never reads an old table. Only the main process reads and writes
the file: it broadcasts the table, the processes score a share of the missing rows each, and every process
writes every process's rows (row_state.gather_rows), so all hold the same table bit for bit.
"""
import importlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast

from ..data.images import open_rgb
from ..errors import SPMLError
from ..files import write_bytes_atomic
from .registry import TEACHERS
from .row_state import gather_rows

CACHE_FOLDER = "teacher_scores"
IMAGES_A_CALL = 32  # images handed to one scores() call


@dataclass
class TrainingImages:
    """What a teacher scores: the whole training split, of which the run trains on the first `rows`."""

    split: object  # the datasets.Dataset of the training split, every row (data.train_subset aside)
    rows: int
    image_root: Path
    folder: Path  # the dataset's folder, where the cache goes
    class_names: list


def build_teacher(config, images, device):
    """The teacher `method.teacher` names; one line if it names none."""
    spec = config.teacher
    if not spec:
        raise SPMLError(f"method.name={config.name} needs a teacher: method.teacher={' | '.join(TEACHERS)} or "
                        "module:attribute of your own")
    if spec in TEACHERS:
        module, name = TEACHERS[spec]
        return getattr(importlib.import_module(f"ignore.{module}"), name).from_settings(config, images, device)
    module, colon, attribute = spec.partition(":")
    if not (module and colon and attribute):
        raise SPMLError(f"method.teacher '{spec}' is neither a built-in teacher ({' | '.join(TEACHERS)}) nor "
                        "module:attribute of your own")
    try:
        factory = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise SPMLError(f"method.teacher '{spec}': cannot import it ({error})") from None
    return factory(list(images.class_names), device)


def teacher_name(teacher, config):
    """The cache's name for the teacher: its `name`, else the setting; only characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(getattr(teacher, "name", config.teacher)))


def cache_path(images, name):
    return images.folder / CACHE_FOLDER / f"{name}-{images.split._fingerprint}.npy"


def shared_teacher_scores(accelerator, teacher, name, images):
    """(images.rows, C) float32: the teacher's scores of the rows the run trains on, identical on every rank."""
    path, shape = cache_path(images, name), (len(images.split), len(images.class_names))
    table = torch.full(shape, float("nan"))
    if accelerator.is_main_process:
        table = read_cache(path, shape)
    table = broadcast(table.to(accelerator.device)).cpu()
    missing = torch.isnan(table[:images.rows]).any(dim=1).nonzero()[:, 0]
    if len(missing) == 0:
        return table[:images.rows].clone()
    if accelerator.is_main_process:
        require_writable(path.parent)  # before the scoring, which the cache is there to do once
    accelerator.print(f"teacher {name}: scoring {len(missing)} training images once, cached in {path}")
    mine = missing[accelerator.process_index::accelerator.num_processes]
    values = torch.cat([checked_scores(teacher, images, mine[start:start + IMAGES_A_CALL], name)
                        for start in range(0, len(mine), IMAGES_A_CALL)] or [torch.zeros(0, shape[1])])
    rows, values = gather_rows(accelerator, mine.to(accelerator.device), values.to(accelerator.device))
    written = rows >= 0  # the padding of shorter shares is row -1
    table[rows[written].cpu()] = values[written].cpu().float()
    if accelerator.is_main_process:
        buffer = io.BytesIO()
        np.save(buffer, table.numpy())
        write_bytes_atomic(path, buffer.getvalue())
    accelerator.wait_for_everyone()
    return table[:images.rows].clone()


def read_cache(path, shape):
    """The cached table, or an all-NaN one."""
    table = torch.full(shape, float("nan"))
    if path.is_file():
        try:
            table = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except (OSError, ValueError) as error:
            raise SPMLError(f"{path}: cannot read the cached teacher scores ({error}); delete it") from None
        if tuple(table.shape) != shape:
            raise SPMLError(f"{path}: holds {tuple(table.shape)} teacher scores, the training split needs {shape}; "
                            "delete it")
    return table


def require_writable(folder):
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise SPMLError(f"{folder}: cannot create the teacher's cache ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SPMLError(f"{folder}: the teacher's cache is not writable; make it writable or copy the dataset")


@torch.no_grad()
def checked_scores(teacher, images, rows, name):
    """The teacher's (len(rows), C) float32 scores on the CPU; one line if they are not scores in [0, 1]."""
    if hasattr(teacher, "scores_of_rows"):  # reads the clean labels, not the images
        scores = teacher.scores_of_rows(rows)
    else:
        scores = teacher.scores([open_rgb(images.image_root, images.split[int(row)]["image"]) for row in rows])
    scores = torch.as_tensor(scores).detach().float().cpu()
    expected = (len(rows), len(images.class_names))
    if tuple(scores.shape) != expected:
        raise SPMLError(f"teacher {name}: scores() returned shape {tuple(scores.shape)} for {expected[0]} images "
                        f"of {expected[1]} classes")
    if not ((scores >= 0) & (scores <= 1)).all():
        raise SPMLError(f"teacher {name}: scores() returned values outside [0, 1] (or NaN)")
    return scores
