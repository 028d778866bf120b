"""The single-positive protocol (SPEC 4) against numpy's RandomState(1200), stepped by hand."""
import numpy as np
import pytest

from ignore.data.protocol import PROTOCOL_SEED, observe_positives, split_train_val
from ignore.errors import SPMLError

# 6 images x 4 classes: three positives, none, all, one, three, one.
LABELS = np.array([
    [1, 0, 1, 1],
    [0, 0, 0, 0],
    [1, 1, 1, 1],
    [0, 1, 0, 0],
    [1, 1, 0, 1],
    [0, 0, 1, 0],
], dtype=np.uint8)

# observe_positives(LABELS, num_positives=2) as of this writing: a regression constant that
# must never move, since every published observation file depends on it.
PINNED_TWO_POSITIVES = np.array([
    [1, 0, 0, 1],
    [0, 0, 0, 0],
    [0, 0, 1, 1],
    [0, 1, 0, 0],
    [1, 0, 0, 1],
    [0, 0, 1, 0],
], dtype=np.int8)


def observe_by_hand(labels, num_positives, shuffle_negatives=True):
    """SPEC 4 step by step: fresh RandomState(1200); 0 -> -1; per row shuffle the positive
    indices (np.nonzero) and keep the first ones, then shuffle the negative indices."""
    signed = np.where(labels == 1, 1, -1)
    rng = np.random.RandomState(1200)
    expected = np.zeros(labels.shape, dtype=np.int8)
    for row in range(signed.shape[0]):
        positives = np.nonzero(signed[row] == 1)[0]
        rng.shuffle(positives)
        for column in positives[:num_positives]:
            expected[row, column] = 1
        if shuffle_negatives:
            negatives = np.nonzero(signed[row] == -1)[0]
            rng.shuffle(negatives)
    return expected


def test_protocol_seed_is_1200():
    assert PROTOCOL_SEED == 1200


def test_observe_positives_matches_the_hand_stepped_rng():
    expected = observe_by_hand(LABELS, num_positives=2)
    observed = observe_positives(LABELS, num_positives=2)
    np.testing.assert_array_equal(observed, expected)
    np.testing.assert_array_equal(observed, PINNED_TWO_POSITIVES)
    assert observed.dtype == np.int8


def test_observe_positives_row_structure():
    observed = observe_positives(LABELS, num_positives=2)
    assert (observed[1] == 0).all()  # no positive: stays unobserved
    assert observed[3].tolist() == [0, 1, 0, 0] and observed[5].tolist() == [0, 0, 1, 0]
    assert observed.sum(1).tolist() == [2, 0, 2, 1, 2, 1]  # min(num_positives, positives)
    assert ((observed == 1) <= (LABELS == 1)).all()  # only true positives are observed
    assert set(np.unique(observed)) <= {0, 1}


def test_negative_shuffle_consumes_rng_state():
    """Without the negative shuffle, row 2 (all positive) keeps other classes."""
    without = observe_by_hand(LABELS, num_positives=2, shuffle_negatives=False)
    assert not np.array_equal(without, PINNED_TWO_POSITIVES)
    np.testing.assert_array_equal(without[:2], PINNED_TWO_POSITIVES[:2])  # same until the RNG drifts
    assert without[2].tolist() == [0, 1, 0, 1] and PINNED_TWO_POSITIVES[2].tolist() == [0, 0, 1, 1]


def test_one_positive_per_row_and_other_seeds():
    np.testing.assert_array_equal(observe_positives(LABELS, 1), observe_by_hand(LABELS, 1))
    np.testing.assert_array_equal(observe_positives(LABELS), observe_by_hand(LABELS, 1))
    rng = np.random.default_rng(7)
    big = (rng.random((50, 9)) < 0.35).astype(np.uint8)
    np.testing.assert_array_equal(observe_positives(big, 1), observe_by_hand(big, 1))
    # a different seed is a different draw (the seed argument is honoured)
    assert not np.array_equal(observe_positives(big, 1, seed=1201), observe_positives(big, 1))


def test_observe_positives_leaves_input_alone_and_checks_arguments():
    labels = LABELS.copy()
    observe_positives(labels, 2)
    np.testing.assert_array_equal(labels, LABELS)
    with pytest.raises(SPMLError, match="num_positives"):
        observe_positives(LABELS, num_positives=0)
    with pytest.raises(ValueError, match="2-d"):
        observe_positives(np.array([1, 0, 1]))


def expected_split(num_images):
    permutation = np.random.RandomState(1200).permutation(num_images)
    n_val = int(round(0.2 * num_images))
    return sorted(permutation[: num_images - n_val].tolist()), sorted(permutation[-n_val:].tolist())


@pytest.mark.parametrize("num_images, train, val", [
    (10, [0, 1, 2, 4, 5, 6, 8, 9], [3, 7]),
    (11, [0, 1, 2, 4, 5, 6, 7, 8, 10], [3, 9]),
])
def test_split_train_val(num_images, train, val):
    assert expected_split(num_images) == (train, val)  # the literals are RandomState(1200)'s
    got_train, got_val = split_train_val(num_images)
    assert got_train.tolist() == train and got_val.tolist() == val
    assert len(got_val) == round(0.2 * num_images)
    assert not set(got_train) & set(got_val)
    assert sorted(got_train.tolist() + got_val.tolist()) == list(range(num_images))


@pytest.mark.parametrize("num_images", [5, 37, 100, 1001])
def test_split_train_val_other_sizes(num_images):
    got_train, got_val = split_train_val(num_images)
    assert (got_train.tolist(), got_val.tolist()) == expected_split(num_images)
    assert (np.diff(got_train) > 0).all() and (np.diff(got_val) > 0).all()


@pytest.mark.parametrize("num_images, val_fraction", [(10, 0.0), (10, 1.0), (1, 0.2)])
def test_split_train_val_rejects_empty_sides(num_images, val_fraction):
    with pytest.raises(SPMLError, match="val_fraction"):
        split_train_val(num_images, val_fraction)
