"""Metrics against sklearn and against values worked out by hand."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from ignore.metrics import average_precision, cf1_of1, f1_thresholds, multilabel_metrics


def random_case(seed, num_rows=40):
    """Scores with many ties (one decimal) and random labels with at least one positive."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(num_rows), 1)
    labels = (rng.random(num_rows) < rng.uniform(0.05, 0.7)).astype(int)
    labels[rng.integers(num_rows)] = 1
    return scores, labels


@pytest.mark.parametrize("seed", range(100))
def test_average_precision_matches_sklearn_with_ties(seed):
    scores, labels = random_case(seed, num_rows=5 + seed)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_average_precision_by_hand():
    # scores 0.9 (pos), 0.5 (neg), 0.5 (pos), 0.1 (neg): the tied pair is one threshold.
    # thresholds: 0.9 -> P=1/1, R=1/2; 0.5 -> P=2/3, R=2/2. AP = 1/2*1 + 1/2*2/3 = 5/6
    assert average_precision([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # every score tied: a single threshold, P = 2/4, R = 1 -> AP = 1/2 (not order-dependent)
    assert average_precision([0.3] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)
    assert average_precision([0.3] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    assert math.isnan(average_precision([0.2, 0.4], [0, 0]))


def test_multilabel_map_is_mean_of_sklearn_aps():
    rng = np.random.default_rng(11)
    scores = np.round(rng.random((60, 7)), 2)
    labels = (rng.random((60, 7)) < 0.3).astype(int)
    labels[0] = 1  # every class has a positive
    metrics = multilabel_metrics(scores, labels)
    aps = [average_precision_score(labels[:, c], scores[:, c]) for c in range(7)]
    assert metrics["per_class_AP"] == pytest.approx([100 * ap for ap in aps])
    assert metrics["mAP"] == pytest.approx(100 * np.mean(aps))
    assert metrics["classes_without_positive"] == 0


def test_class_without_positive_scores_zero_and_is_counted():
    rng = np.random.default_rng(3)
    scores = rng.random((30, 4))
    labels = (rng.random((30, 4)) < 0.4).astype(int)
    labels[0, :3] = 1
    labels[:, 2] = 0  # class 2 has no positive in this set
    metrics = multilabel_metrics(scores, labels)
    aps = [average_precision_score(labels[:, c], scores[:, c]) for c in (0, 1, 3)]
    assert metrics["classes_without_positive"] == 1
    assert metrics["per_class_AP"][2] == 0.0
    # the literature's convention: divide by all 4 classes, not by the 3 with a positive
    assert metrics["mAP"] == pytest.approx(100 * sum(aps) / 4)
    assert metrics["mAP"] < 100 * np.mean(aps)


# 4 images x 3 classes, threshold 0.5 (a score >= 0.5 is predicted positive)
SCORES = np.array([
    [0.9, 0.2, 0.6],
    [0.7, 0.8, 0.1],
    [0.3, 0.6, 0.4],
    [0.1, 0.4, 0.7],
])
LABELS = np.array([
    [1, 0, 1],
    [1, 1, 0],
    [0, 0, 0],
    [1, 0, 1],
])
# predicted:            class 0: rows 0,1   class 1: rows 1,2   class 2: rows 0,3
# positives:            class 0: rows 0,1,3 class 1: row 1      class 2: rows 0,3
# true positives:       2                   1                   2
# precision:            2/2 = 1             1/2                 2/2 = 1
# recall:               2/3                 1/1 = 1             2/2 = 1
# CP = (1 + 1/2 + 1)/3 = 5/6;   CR = (2/3 + 1 + 1)/3 = 8/9
# CF1 = 2 * 5/6 * 8/9 / (5/6 + 8/9) = (40/27) / (31/18) = 720/837 = 80/93 = 0.860215...
# overall: TP = 5, predicted = 6, positives = 6 -> OP = OR = 5/6 -> OF1 = 5/6 = 0.83333...
# AP by hand: class 0 ranks (0.9 +, 0.7 +, 0.3 -, 0.1 +): 1/3*1 + 1/3*1 + 1/3*3/4 = 11/12
#             class 1 ranks (0.8 +, ...): 1;  class 2 ranks (0.7 +, 0.6 +, ...): 1
# mAP = (11/12 + 1 + 1)/3 = 35/36


def test_cf1_of1_by_hand():
    metrics = multilabel_metrics(SCORES, LABELS)
    assert metrics["CF1"] == pytest.approx(100 * 80 / 93)
    assert metrics["OF1"] == pytest.approx(100 * 5 / 6)
    assert metrics["per_class_AP"] == pytest.approx([100 * 11 / 12, 100.0, 100.0])
    assert metrics["mAP"] == pytest.approx(100 * 35 / 36)
    assert metrics["classes_without_positive"] == 0


def test_threshold_changes_f1_but_not_map():
    # threshold 0.75: predicted class 0: row 0 (TP); class 1: row 1 (TP); class 2: none.
    # CP = (1 + 1 + 0)/3 = 2/3; CR = (1/3 + 1 + 0)/3 = 4/9; CF1 = 2*(2/3)(4/9)/(2/3+4/9) = 8/15
    # OP = 2/2 = 1; OR = 2/6 = 1/3; OF1 = 2*(1/3)/(4/3) = 1/2
    metrics = multilabel_metrics(SCORES, LABELS, threshold=0.75)
    assert metrics["CF1"] == pytest.approx(100 * 8 / 15)
    assert metrics["OF1"] == pytest.approx(50.0)
    assert metrics["mAP"] == pytest.approx(100 * 35 / 36)


def test_cf1_of1_take_one_threshold_per_class():
    # thresholds (0.95, 0.5, 0.65): predicted class 0: none; class 1: rows 1, 2 (1 TP); class 2: row 3 (TP).
    # CP = (0 + 1/2 + 1)/3 = 1/2; CR = (0 + 1 + 1/2)/3 = 1/2; CF1 = 1/2.  OP = 2/3; OR = 2/6; OF1 = 4/9
    assert cf1_of1(SCORES, LABELS, [0.95, 0.5, 0.65]) == pytest.approx((50.0, 100 * 4 / 9))
    assert cf1_of1(SCORES, LABELS, [0.5] * 3) == cf1_of1(SCORES, LABELS, 0.5)


# 6 images x 4 classes, each column a case worked out below (F1 = 2 TP / (predicted + positives))
F1_SCORES = np.array([
    [0.9, 0.7, 0.9, 0.6],
    [0.8, 0.7, 0.8, 0.5],
    [0.6, 0.6, 0.7, 0.4],
    [0.4, 0.2, 0.6, 0.3],
    [0.3, 0.2, 0.2, 0.2],
    [0.1, 0.1, 0.1, 0.1],
])
F1_LABELS = np.array([
    [1, 1, 1, 0],
    [0, 0, 0, 0],
    [1, 1, 0, 0],
    [1, 0, 1, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
])
# class 0 (3 positives), cut below each score: F1 = 2/4, 2/5, 4/6, 6/7, 6/8, 6/9: best below 0.4, so
#   midway to the next score: (0.4 + 0.3) / 2 = 0.35
# class 1 (2 positives; 0.7 and 0.2 tied, one cut each): below 0.7 F1 = 2/4, below 0.6 4/5, below 0.2 4/7,
#   below 0.1 4/8: best below 0.6: (0.6 + 0.2) / 2 = 0.4
# class 2 (2 positives): F1 = 2/3, 2/4, 2/5, 4/6, 4/7, 4/8: below 0.9 and below 0.6 tie at 2/3; the higher
#   cut wins (fewer predictions): (0.9 + 0.8) / 2 = 0.85
# class 3: no positive, no F1: the median of the others' (0.35, 0.4, 0.85) = 0.4


def test_f1_thresholds_by_hand():
    np.testing.assert_allclose(f1_thresholds(F1_SCORES, F1_LABELS), [0.35, 0.4, 0.85, 0.4], atol=1e-12)
    # every image positive: the best cut predicts them all, at the lowest score itself
    assert f1_thresholds([[0.3], [0.2]], [[1], [1]]).tolist() == [0.2]
    # no class with a positive: nothing to choose from, the fallback
    assert f1_thresholds(F1_SCORES[:, 3:], F1_LABELS[:, 3:]).tolist() == [0.5]


@pytest.mark.parametrize("seed", range(4))
def test_f1_thresholds_reach_the_best_f1_of_each_class_as_sklearn_counts_it(seed):
    scores, labels = zip(*(random_case(seed * 10 + column, num_rows=30) for column in range(10)))
    scores, labels = np.stack(scores, axis=1), np.stack(labels, axis=1)
    for column, threshold in enumerate(f1_thresholds(scores, labels)):
        # every cut tried: F1 = 2 TP / (predicted + positives)
        cuts = scores[:, column][None, :] >= np.unique(scores[:, column])[:, None]
        positive = labels[:, column] == 1
        best = (2 * (cuts & positive).sum(1) / (cuts.sum(1) + positive.sum())).max()
        assert f1_score(labels[:, column], scores[:, column] >= threshold) == pytest.approx(best, abs=1e-12)


# 5 images x 3 classes with a mask of the verified entries (an unverified entry: neither positive nor negative)
VERIFIED_SCORES = np.array([
    [0.9, 0.8, 0.3],
    [0.8, 0.6, 0.7],
    [0.7, 0.4, 0.2],
    [0.4, 0.3, 0.9],
    [0.2, 0.1, 0.5],
])
VERIFIED_LABELS = np.array([
    [0, 1, 0],
    [1, 0, 0],
    [0, 1, 0],
    [1, 0, 0],
    [0, 0, 0],
])
VERIFIED = np.array([
    [0, 1, 1],
    [1, 1, 0],
    [1, 1, 1],
    [1, 0, 0],
    [1, 1, 0],
], dtype=bool)
# class 0, verified rows 1-4: 0.8 +, 0.7 -, 0.4 +, 0.2 -: AP = 1/2*1 + 1/2*2/3 = 5/6
#   (all rows: the unverified 0.9 ranks first and AP falls to 1/2*1/2 + 1/2*2/4 = 1/2)
# class 1, verified rows 0, 1, 2, 4: 0.8 +, 0.6 -, 0.4 +, 0.1 -: AP = 5/6
# class 2, verified rows 0, 2: both negative, no verified positive: AP 0, counted
# mAP = (5/6 + 5/6 + 0)/3 = 5/9; 10 verified entries
# at 0.5, predicted and verified: class 0 rows 1, 2 (TP 1 of 2 positives); class 1 rows 0, 1 (TP 1 of 2);
#   class 2 none. CP = (1/2 + 1/2 + 0)/3 = 1/3, CR = 1/3: CF1 = 1/3. TP 2, predicted 4, positives 4: OF1 = 1/2
# F1 cuts over the verified entries: class 0 best below 0.4 (F1 4/5), midway to 0.2: 0.3; class 1 best below 0.4,
#   midway to the next verified score 0.1: 0.25 (the unverified 0.3 would make it 0.35); class 2: the median 0.275


def test_average_precision_over_the_verified_entries_matches_sklearn_on_them():
    metrics = multilabel_metrics(VERIFIED_SCORES, VERIFIED_LABELS, verified=VERIFIED)
    for column in (0, 1):
        known = VERIFIED[:, column]
        expected = average_precision_score(VERIFIED_LABELS[known, column], VERIFIED_SCORES[known, column])
        assert metrics["per_class_AP"][column] == pytest.approx(100 * expected, abs=1e-12)
    assert metrics["per_class_AP"] == pytest.approx([100 * 5 / 6, 100 * 5 / 6, 0.0])
    assert metrics["mAP"] == pytest.approx(100 * 5 / 9)
    assert metrics["classes_without_positive"] == 1 and metrics["verified_entries"] == 10
    assert multilabel_metrics(VERIFIED_SCORES, VERIFIED_LABELS)["per_class_AP"][0] == pytest.approx(50.0)


def test_cf1_of1_and_f1_thresholds_over_the_verified_entries_by_hand():
    metrics = multilabel_metrics(VERIFIED_SCORES, VERIFIED_LABELS, verified=VERIFIED)
    assert (metrics["CF1"], metrics["OF1"]) == pytest.approx((100 / 3, 50.0))
    assert cf1_of1(VERIFIED_SCORES, VERIFIED_LABELS, 0.5, VERIFIED) == pytest.approx((100 / 3, 50.0))
    np.testing.assert_allclose(f1_thresholds(VERIFIED_SCORES, VERIFIED_LABELS, verified=VERIFIED), [0.3, 0.25, 0.275],
                               atol=1e-12)
    # every entry taken as known: class 1 at 0.35, and class 2 the median of 0.3 and 0.35
    np.testing.assert_allclose(f1_thresholds(VERIFIED_SCORES, VERIFIED_LABELS), [0.3, 0.35, 0.325], atol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_metrics_over_random_verified_masks_match_sklearn_on_the_verified_entries(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((30, 5)), 1)  # ties
    verified = rng.random((30, 5)) < 0.6
    labels = (rng.random((30, 5)) < 0.4) & verified  # the positives are verified ones
    labels[0], verified[0] = True, True  # every class has a verified positive
    metrics = multilabel_metrics(scores, labels, verified=verified)
    aps = [average_precision_score(labels[verified[:, c], c], scores[verified[:, c], c]) for c in range(5)]
    assert metrics["per_class_AP"] == pytest.approx([100 * ap for ap in aps], abs=1e-12)
    assert metrics["mAP"] == pytest.approx(100 * np.mean(aps), abs=1e-12)
    predicted = scores >= 0.5
    # OF1 pools the verified entries; CF1 is the F1 of the per-class mean precision and recall on them
    assert metrics["OF1"] == pytest.approx(100 * f1_score(labels[verified], predicted[verified]), abs=1e-12)
    precision = np.mean([precision_score(labels[verified[:, c], c], predicted[verified[:, c], c], zero_division=0)
                         for c in range(5)])
    recall = np.mean([recall_score(labels[verified[:, c], c], predicted[verified[:, c], c]) for c in range(5)])
    assert metrics["CF1"] == pytest.approx(100 * 2 * precision * recall / (precision + recall), abs=1e-12)
    for column, threshold in enumerate(f1_thresholds(scores, labels, verified=verified)):
        known = verified[:, column]
        assert threshold == f1_thresholds(scores[known, column:column + 1], labels[known, column:column + 1])[0]


@pytest.mark.parametrize("seed", range(4))
def test_every_entry_verified_gives_exactly_the_metrics_of_complete_labels(seed):
    scores, labels = zip(*(random_case(seed * 10 + column, num_rows=25) for column in range(6)))
    scores, labels = np.stack(scores, axis=1), np.stack(labels, axis=1)
    labels[:, 5] = 0  # a class without positive
    everything = np.ones_like(labels, dtype=bool)
    masked = multilabel_metrics(scores, labels, threshold=0.4, verified=everything)
    assert masked.pop("verified_entries") == labels.size
    assert masked == multilabel_metrics(scores, labels, threshold=0.4)  # bit for bit
    assert np.array_equal(f1_thresholds(scores, labels, verified=everything), f1_thresholds(scores, labels))
    assert cf1_of1(scores, labels, 0.3, everything) == cf1_of1(scores, labels, 0.3)
