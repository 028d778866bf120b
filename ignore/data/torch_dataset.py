"""The PyTorch view of one split: decode once, make the views, yield a dict."""
import logging
from contextlib import contextmanager

import numpy as np
import torch
from datasets import Value
from torch.utils.data import Dataset, Sampler

from ..errors import SPMLError
from .images import open_rgb
from .registry import BAD_IMAGE_POLICIES

logger = logging.getLogger(__name__)


def augmentation_seed(seed, epoch, index):
    """The seed of one sample's random views: a function of (seed, epoch, row) only."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochShuffleSampler(Sampler):
    """A shuffled order fixed by (seed, epoch) that yields (epoch, row) keys.

    Carrying the epoch with each row lets the dataset seed that row's augmentations from
    (seed, epoch, row) alone: the views do not depend on the number of processes or
    workers, and a run resumed mid-epoch sees exactly the views it would have seen.
    Accelerate calls set_epoch before each epoch.
    """

    def __init__(self, num_rows, seed):
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_rows

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        return iter([(self.epoch, row) for row in order])


class SPMLImageDataset(Dataset):
    """Rows of one split as {"weak", "strong"?, "labels", "observed", "verified"?, "index"}.

    views maps a name ("weak", "strong", or "image" for evaluation) to a transform; each is
    applied to the same decoded image. A key is a row, or (epoch, row) from
    EpochShuffleSampler, whose views are then seeded from (seed, epoch, row).
    "verified" comes with a split whose clean labels are incomplete (its `verified` column).
    bad_images="skip" turns an unreadable image into a {"skipped": row} item, which
    `collate_skipping` drops and reports; "error" stops with its SPMLError.
    """

    def __init__(self, split, image_root, views, bad_images="error", seed=0):
        if bad_images not in BAD_IMAGE_POLICIES:
            raise SPMLError(f"data.bad_images must be one of {BAD_IMAGE_POLICIES}, got '{bad_images}'")
        self.images = image_entries(split)
        self.labels = torch.from_numpy(np.asarray(split["labels"], dtype=np.float32))
        self.observed = torch.from_numpy(np.asarray(split["observed"], dtype=np.float32))
        self.verified = (torch.from_numpy(np.asarray(split["verified"], dtype=np.float32))
                         if "verified" in split.column_names else None)
        self.image_root = image_root
        self.views = views
        self.bad_images = bad_images
        self.seed = seed

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        if isinstance(key, (tuple, list)):
            epoch, index = key
            with seeded_views(self.seed, epoch, index):
                return self.load(index)
        return self.load(key)

    def load(self, index):
        verified = {} if self.verified is None else {"verified": self.verified[index]}
        return decoded_item(self.image_root, self.images[index], self.views, self.bad_images,
                            labels=self.labels[index], observed=self.observed[index], index=index, **verified)


def image_entries(split):
    """The split's image column, read one entry at a time as open_rgb takes it. Paths are read from the Arrow
    column itself, about 1 us an entry where the datasets Column takes over 100 us; embedded images (a dict of
    bytes and path each) stay with datasets, which reads only the asked row's bytes."""
    if split.features["image"] == Value("string"):
        return PathColumn(split.with_format("arrow")["image"])
    return split["image"]


class PathColumn:
    """Entries of an Arrow string column as Python strings: Arrow buffers, shared by forked loader workers
    without a copy (a list of str would be copied page by page as reference counts change)."""

    def __init__(self, column):
        self.column = column

    def __len__(self):
        return len(self.column)

    def __getitem__(self, index):
        return self.column[index].as_py()


@contextmanager
def seeded_views(seed, epoch, index):
    """Inside, the random views are those of (seed, epoch, row); the global CPU RNG stays as it was.

    Only the CPU generator, which the views draw from: torch.manual_seed would also seed every accelerator
    backend, which costs over 100 us an image."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(augmentation_seed(seed, epoch, index))
    try:
        yield
    finally:
        generator.set_state(state)


def decoded_item(image_root, entry, views, bad_images, **fields):
    """{view name: view of the decoded image, **fields}; an unreadable image raises its SPMLError, or with
    bad_images="skip" is logged and becomes {"skipped": fields["index"]}."""
    try:
        image = open_rgb(image_root, entry)
    except SPMLError as error:
        if bad_images == "error":
            raise
        logger.warning("skipping unreadable image: %s", error)
        return {"skipped": fields["index"]}
    return {**{name: view(image) for name, view in views.items()}, **fields}


def collate_skipping(items):
    """Default collation of the readable items; the indices of skipped ones go in "skipped"."""
    skipped = [item["skipped"] for item in items if "skipped" in item]
    kept = [item for item in items if "skipped" not in item]
    if not kept:
        raise SPMLError(f"every image of a batch was unreadable (dataset rows {skipped})")
    batch = torch.utils.data.default_collate(kept)
    batch["skipped"] = torch.tensor(skipped, dtype=torch.long)
    return batch
