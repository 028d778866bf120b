"""IGNORE's controls reject exactly what they say, through the same step and losses.

The batch is test_ignore_method's: the information gap flags [F, T, T], [T, F, F] (3 entries);
the unannotated labels are [F, T, T], [T, T, F]; the one false negative is image 0, class 1.
"""
import pytest
import torch

from ignore.losses.rejection import choose_uniformly, entry_uniforms, rejected_entries
from test_ignore_method import ImageIsCAM, batch, bce_negative, bce_positive, make_method

WEAK = [[0.75, 1.0, 3.0], [2.0, 0.5, 2.5]]  # the weak logits of the batch
TARGETS = [[1, 0, 0], [0, 0, 1]]  # assume negative: the observed positives are 1


def loss_without(rejected):
    """L_ign by hand: the mean AN loss over the entries not in `rejected` (a set of (row, class))."""
    kept = [bce_positive(z) if TARGETS[row][column] else bce_negative(z)
            for row in range(2) for column, z in enumerate(WEAK[row]) if (row, column) not in rejected]
    return sum(kept) / len(kept)


def test_never_reject_keeps_every_entry_but_still_scores_the_detector():
    output = make_method("never").step(ImageIsCAM(), batch(), epoch=1)
    assert output.parts["loss_ign"].item() == pytest.approx(loss_without(set()), rel=1e-6)
    assert int(output.counts["rejected"]) == 0 and int(output.counts["flagged"]) == 3


def test_oracle_reject_drops_exactly_the_false_negative():
    output = make_method("oracle").step(ImageIsCAM(), batch(), epoch=1)
    assert output.parts["loss_ign"].item() == pytest.approx(loss_without({(0, 1)}), rel=1e-6)
    assert int(output.counts["rejected"]) == 1 and int(output.counts["rejected_true_fn"]) == 1


def test_random_reject_drops_as_many_unannotated_entries_as_the_gap_flags():
    output = make_method("random").step(ImageIsCAM(), batch(), epoch=1)
    flagged = torch.tensor([[False, True, True], [True, False, False]])
    unannotated = torch.tensor([[False, True, True], [True, True, False]])
    chosen = rejected_entries("random", flagged, unannotated, batch(), epoch=1, seed=0)
    assert int(chosen.sum()) == 3 and not (chosen & ~unannotated).any()
    rejected = {tuple(entry) for entry in chosen.nonzero().tolist()}
    assert output.parts["loss_ign"].item() == pytest.approx(loss_without(rejected), rel=1e-6)
    assert int(output.counts["rejected"]) == 3


def test_no_control_rejects_during_warm_up():
    for rule in ("random", "oracle"):
        output = make_method(rule).step(ImageIsCAM(), batch(), epoch=0)
        assert int(output.counts["rejected"]) == 0


def test_uniforms_depend_on_seed_epoch_row_and_class_only():
    rows = torch.tensor([5, 9, 5])
    values = entry_uniforms(seed=1, epoch=2, rows=rows, num_classes=4)
    assert values.shape == (3, 4) and ((values >= 0) & (values < 1)).all()
    assert torch.equal(values[0], values[2])  # the same row gets the same numbers, wherever it is
    assert torch.equal(values[1:2], entry_uniforms(1, 2, torch.tensor([9]), 4))  # batch composition
    assert not torch.equal(values, entry_uniforms(1, 3, rows, 4))
    assert not torch.equal(values, entry_uniforms(2, 2, rows, 4))
    many = entry_uniforms(0, 0, torch.arange(2500), 4)
    assert many.mean().item() == pytest.approx(0.5, abs=0.01)
    assert many.std().item() == pytest.approx((1 / 12) ** 0.5, abs=0.01)


def test_choose_uniformly_takes_the_smallest_uniforms_among_candidates():
    uniforms = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.05, 0.7]])
    candidates = torch.tensor([[True, True, True], [True, False, True]])
    chosen = choose_uniformly(torch.tensor(2), candidates, uniforms)
    assert chosen.tolist() == [[False, True, False], [True, False, False]]  # 0.05 is no candidate
    assert int(choose_uniformly(torch.tensor(9), candidates, uniforms).sum()) == 5  # at most every candidate


def negative_batch():
    """The batch with image 1, class 0 (flagged by the gap, clean 0) observed absent (-1)."""
    step_batch = batch()
    step_batch["observed"] = step_batch["observed"].clone()
    step_batch["observed"][1, 0] = -1.0
    return step_batch


def test_ignore_never_rejects_an_observed_negative():
    output = make_method("gap").step(ImageIsCAM(), negative_batch(), epoch=1)
    assert output.parts["loss_ign"].item() == pytest.approx(loss_without({(0, 1), (0, 2)}), rel=1e-6)
    counts = {name: int(value) for name, value in output.counts.items()}
    assert (counts["flagged"], counts["rejected"], counts["false_negatives"]) == (2, 2, 1)
    assert output.fn_scores["candidates"].tolist() == [[False, True, True], [False, True, False]]


def test_no_control_rejects_an_observed_negative():
    unknown = torch.tensor([[False, True, True], [False, True, False]])
    for rule in ("random", "oracle"):
        chosen = rejected_entries(rule, unknown & torch.tensor([[False, True, True], [False, False, False]]),
                                  unknown, negative_batch(), epoch=1, seed=0)
        assert not chosen[1, 0]
    assert make_method("never").step(ImageIsCAM(), negative_batch(), epoch=1).parts["loss_ign"].item() == \
        pytest.approx(loss_without(set()), rel=1e-6)
    output = make_method("random").step(ImageIsCAM(), negative_batch(), epoch=1)
    assert int(output.counts["rejected"]) == 2
