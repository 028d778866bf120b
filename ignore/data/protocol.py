"""The single-positive protocol of the SPML literature, reproduced bit for bit.

Cole et al. (CVPR 2021) generate the observed labels with a fresh numpy
RandomState(1200) per phase; every later paper (LL, BoostLU, IGNORE) reuses those files.
"""
import numpy as np

from ..errors import SPMLError

PROTOCOL_SEED = 1200


def observe_positives(labels: np.ndarray, num_positives: int = 1, seed: int = PROTOCOL_SEED) -> np.ndarray:
    """Observed labels for one phase: 1 for the kept positives, 0 (unknown) elsewhere.

    labels is the clean 0/1 matrix (N, C). Per row: shuffle the positive indices and keep
    the first `num_positives`, then shuffle the negative indices as well. No negative is
    kept, but that shuffle consumes RNG state, so it must happen for the later rows to
    match the published files. A row without a positive stays all unknown.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-d matrix, got shape {labels.shape}")
    if num_positives < 1:
        raise SPMLError(f"num_positives must be at least 1, got {num_positives}")
    signed = np.where(labels == 1, 1, -1)  # the literature's code maps 0 to -1 first
    rng = np.random.RandomState(seed)
    observed = np.zeros(labels.shape, dtype=np.int8)
    for row, label_vector in enumerate(signed):
        positive_indices = np.nonzero(label_vector == 1)[0]
        rng.shuffle(positive_indices)
        observed[row, positive_indices[:num_positives]] = 1
        negative_indices = np.nonzero(label_vector == -1)[0]
        rng.shuffle(negative_indices)
    return observed


def split_train_val(num_images: int, val_fraction: float = 0.2, seed: int = PROTOCOL_SEED):
    """Indices (train, val) of the official train set, each sorted ascending.

    perm = RandomState(seed).permutation(N); n_val = round(val_fraction * N);
    train = sorted(perm[:N - n_val]); val = sorted(perm[-n_val:]).
    """
    n_val = int(np.round(val_fraction * num_images))
    if not 0 < n_val < num_images:
        raise SPMLError(
            f"val_fraction={val_fraction} of {num_images} images gives {n_val} validation images; "
            "both train and val need at least one"
        )
    permutation = np.random.RandomState(seed).permutation(num_images)
    return np.sort(permutation[: num_images - n_val]), np.sort(permutation[-n_val:])
