"""False-negative score diagnostics: AUROC against sklearn, the epoch collector."""
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from sklearn.metrics import roc_auc_score

from ignore.training.fn_scores import FNScoreCollector, auroc, histogram


@pytest.mark.parametrize("seed", range(4))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    targets = rng.random(300) < 0.2
    scores = np.round(rng.normal(size=300) + targets, 1)  # rounded: many ties
    assert auroc(scores, targets) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)


def test_auroc_by_hand_and_without_one_group():
    # positives 0.8 and 0.4 against negatives 0.4 and 0.1: pairs won 1 + 1 + 0.5 (tie) + 1 of 4
    assert auroc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert np.isnan(auroc([0.3, 0.2], [0, 0]))


def test_collector_keeps_only_candidates_over_the_steps_of_an_epoch():
    collector = FNScoreCollector()
    rng = np.random.default_rng(0)
    every = {"score": [], "target": [], "candidate": []}
    for _ in range(3):
        scores, targets = torch.tensor(rng.normal(size=(4, 5))), torch.tensor(rng.random((4, 5)) < 0.3)
        candidates = torch.tensor(rng.random((4, 5)) < 0.7)
        collector.add({"scores": {"gap": scores, "logit": -scores}, "targets": targets, "candidates": candidates})
        for name, value in (("score", scores), ("target", targets), ("candidate", candidates)):
            every[name].append(value.numpy().ravel())
    score, target, candidate = (np.concatenate(every[name]) for name in ("score", "target", "candidate"))
    aurocs, groups = collector.summary(Accelerator(cpu=True))
    expected = roc_auc_score(target[candidate], score[candidate])
    assert aurocs["gap_auroc"] == pytest.approx(expected, abs=1e-6)
    assert aurocs["logit_auroc"] == pytest.approx(1 - expected, abs=1e-6)
    assert len(groups["gap"]["true_fn"]) == (target & candidate).sum()
    assert len(groups["gap"]["true_negative"]) == (~target & candidate).sum()
    counts = histogram(groups["gap"], bins=4)
    assert len(counts["edges"]) == 5 and sum(counts["true_fn"]) == (target & candidate).sum()


def test_gated_out_labels_tie_at_minus_infinity_and_stay_out_of_histograms():
    scores = np.array([2.0, -np.inf, -np.inf, 1.0, -np.inf])
    targets = np.array([1, 1, 0, 0, 0])
    assert auroc(scores, targets) == pytest.approx(roc_auc_score(targets, np.where(np.isinf(scores), -9, scores)))
    counts = histogram({"true_fn": scores[targets == 1], "true_negative": scores[targets == 0]}, bins=2)
    assert counts == {"edges": [1.0, 1.5, 2.0], "true_fn": [0, 1], "true_negative": [1, 0]}


def test_an_epoch_without_fn_scores_gives_nothing():
    assert FNScoreCollector().summary(Accelerator(cpu=True)) == ({}, {})
