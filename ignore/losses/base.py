"""What every method shares: the step interface and the logits-form loss pieces."""
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from ..data.views import IMAGENET
from .row_state import is_mapped, new_table

PICTURE_PADDING = 2  # white pixels around each panel of a Picture's grid


@dataclass
class StepOutput:
    """What a method's step returns to the training loop."""

    loss: torch.Tensor  # to back-propagate
    logits: torch.Tensor  # the weak view's logits (detached here)
    parts: dict  # {name: scalar tensor}, averaged over a log interval (detached here)
    counts: dict = field(default_factory=dict)  # {name: count tensor}, summed over the interval and over ranks
    # scores of suspected false negatives, which the loop turns into per-epoch AUROCs:
    # {"scores": {name: (B, C)}, "candidates": (B, C) bool, "targets": (B, C) bool}
    fn_scores: dict = None

    def __post_init__(self):
        self.logits = self.logits.detach()
        self.parts = {name: value.detach() for name, value in self.parts.items()}


@dataclass
class Picture:
    """A method's picture of a few images: a row an image, a column a view of it (TensorBoard and the report)."""

    panels: torch.Tensor  # (rows, columns, 3, H, W) in [0, 1]
    column_titles: tuple  # a title a column
    observed: list  # for each row, the indices of its image's observed positives

    def grid(self):
        """The panels as one (3, H, W) image in their rows and columns, white between them."""
        return make_grid(self.panels.flatten(0, 1), nrow=self.panels.shape[1], padding=PICTURE_PADDING,
                         pad_value=1.0)

    def centres(self):
        """(x of each column's centre, y of each row's centre) in the grid's pixels."""
        rows, columns, _, height, width = self.panels.shape
        return ([PICTURE_PADDING + column * (width + PICTURE_PADDING) + width / 2 for column in range(columns)],
                [PICTURE_PADDING + row * (height + PICTURE_PADDING) + height / 2 for row in range(rows)])


class Method(nn.Module):
    """A training step: `step(model, batch, epoch) -> StepOutput`.

    `ratios` names the logged ratios of two counts. `views` lists the dataset views the step
    reads. Any state that must survive a resume lives in buffers of the method, which the
    trainer registers for checkpointing; state kept per training image is indexed by the
    dataset row (batch["index"]) and shared by every rank (row_state.py): `register_table`.
    """

    views = ("weak",)
    ratios = {}

    def __init__(self, config, num_classes, accelerator, seed=0, normalisation=IMAGENET, num_train_rows=0,
                 positives_per_image=0.0, lr=0.0, epochs=1, train_images=None, row_state_dir=""):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.accelerator = accelerator
        self.seed = seed  # train.seed, for methods that draw random numbers
        self.normalisation = normalisation  # the input normalisation, for pictures and fills
        self.num_train_rows = num_train_rows  # rows of the training split: per-image state
        self.positives_per_image = positives_per_image  # mean clean positives per training image (EPR's k)
        self.lr = lr  # the backbone's learning rate after batch scaling (ROLE's label estimates)
        self.epochs = epochs  # train.epochs (APL's labelling schedule)
        self.train_images = train_images  # teacher.TrainingImages: what a teacher scores (vlpl)
        self.row_state_dir = row_state_dir  # train.row_state_dir: where per-image tables live ("" = memory)

    def register_table(self, name, columns=(), dtype=torch.float32, fill=None):
        """A buffer of one row per training image, (num_train_rows, *columns), its rows fill(start, stop)
        (None: zeros): in this process's memory, or mapped from a file (row_state.new_table)."""
        shape = (self.num_train_rows, *columns)
        self.register_buffer(name, new_table(self.accelerator, self.row_state_dir, shape, dtype, fill))

    def _apply(self, fn, recurse=True):
        """`.to(device)` moves every buffer but the mapped tables: they stay in the host memory that the
        processes of a machine share (copying one to a device would cost its whole size there)."""
        order = list(self._buffers)
        mapped = {name: self._buffers.pop(name) for name in order
                  if self._buffers[name] is not None and is_mapped(self._buffers[name])}
        try:
            super()._apply(fn, recurse)
        finally:
            moved = {**self._buffers, **mapped}
            self._buffers.clear()
            self._buffers.update((name, moved[name]) for name in order)
        return self

    def step(self, model, batch, epoch):
        raise NotImplementedError

    def calibrate(self, model, val_loader):
        """After each epoch's validation: fit what the method learns from the clean validation
        labels; returns the epoch's diagnostics of it (most methods learn nothing there)."""
        return {}

    def pictures(self, model, batch):
        """{tag: Picture} of `batch` for TensorBoard and the report; most methods have none."""
        return {}

    def eval_logits(self, output):
        """The logits evaluation scores, from the model's output dict: its "logits" for most
        methods; a method that changes them at inference (BoostLU) says so in export_settings."""
        return output["logits"]

    def export_settings(self):
        """What an export needs to score as evaluation does (merged into its config.json)."""
        return {}


def bce(logits, targets):
    """Element-wise binary cross-entropy in logits form (safe under mixed precision)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def masked_mean(values, mask):
    """A loss: the mean of `values` where `mask` holds over the global batch of every process,
    as this process's share; 0 (with a gradient path) when nothing is selected.

    DDP averages the processes' gradients. A per-process mean would make that the mean of N
    means, weighing an entry of a process with few selected entries (few rejected labels,
    say) more than one process would. Each process's sum times N over the global count makes
    the average the gradient of the global mean, as on one process. The count is
    all-reduced without a gradient: one collective, no host sync.
    """
    mask = mask.to(values.dtype)
    count = mask.sum().detach()
    processes = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if processes > 1:
        dist.all_reduce(count)
    return (values * mask).sum() * processes / count.clamp(min=1.0)


def entry_mean(values):
    """Mean over all B x C entries, the baselines' reduction; through masked_mean so that both
    normalise the same way."""
    return masked_mean(values, torch.ones_like(values, dtype=torch.bool))


def observed_positive(batch):
    return batch["observed"] == 1


def observed_negative(batch):
    """(B, C) bool: the labels observed absent (-1), known negatives. No method rejects, corrects,
    smooths, estimates or pseudo-labels them: each trains them with plain BCE against 0."""
    return batch["observed"] == -1


def unannotated(batch):
    """(B, C) bool: the unknown labels (0), the only ones a method may treat as possibly wrong."""
    return batch["observed"] == 0


def false_negatives(batch):
    """(B, C) bool: the unannotated labels that the clean labels mark positive."""
    return (batch["labels"] == 1) & unannotated(batch)


def fn_counts(flagged, batch):
    """How well `flagged` (unannotated entries a method suspects) finds the false negatives.

    Measured against the clean training labels, which no loss ever reads.
    """
    unannotated_positive = false_negatives(batch)
    return {
        "flagged": flagged.sum(),
        "flagged_true_fn": (flagged & unannotated_positive).sum(),
        "false_negatives": unannotated_positive.sum(),
    }


FN_RATIOS = {
    "fn_precision": ("flagged_true_fn", "flagged"),
    "fn_recall": ("flagged_true_fn", "false_negatives"),
}


def weak_logits(model, batch):
    """The weak view's forward: (output dict, float32 logits)."""
    output = model(batch["weak"])
    return output, output["logits"].float()
