"""The baselines' steps on 2x3 tensors, against values worked out by hand.

The stand-in network's CAM is the image itself (one 1x2 channel per class) and its logits
are the CAM's mean, so every logit can be read off the pixels:

    image 0 (row 5), observed class 0: CAMs [2, 0], [1, -1], [-2, -2] -> logits [1, 0, -2]
    image 1 (row 2), observed class 2: CAMs [1, 0], [3, 1],  [-1, 1]  -> logits [0.5, 2, 0]

Clean labels: image 0 also has class 1, image 1 also class 1: two false negatives, at
(0, 1) with logit 0 and at (1, 1) with logit 2. With sp(x) = log(1 + e^x), the BCE of a
logit z is sp(-z) against target 1 and sp(z) against target 0.
"""
import math

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from ignore.config import MethodConfig
from ignore.errors import SPMLError
from ignore.losses.registry import build_method
from ignore.losses.row_state import first_writers
from ignore.losses.teacher import TrainingImages
from ignore.models.cam_boost import EXPORT_KEY, export_logits

IMAGES = torch.tensor([
    [[[2.0, 0.0]], [[1.0, -1.0]], [[-2.0, -2.0]]],
    [[[1.0, 0.0]], [[3.0, 1.0]], [[-1.0, 1.0]]],
])
LOGITS = [[1.0, 0.0, -2.0], [0.5, 2.0, 0.0]]
OBSERVED = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
LABELS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
POSITIVE = [[1, 0, 0], [0, 0, 1]]
ROWS = torch.tensor([5, 2])  # dataset rows of the two images
NUM_TRAIN_ROWS = 8


class ImageIsCAM(nn.Module):
    def forward(self, images):
        return {"cam": images, "logits": images.mean(dim=(2, 3))}


def sp(x):
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def batch():
    return {"weak": IMAGES.clone(), "observed": OBSERVED.clone(), "labels": LABELS.clone(), "index": ROWS.clone()}


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def make(name, accelerator, **config):
    context = dict(num_train_rows=NUM_TRAIN_ROWS, positives_per_image=2.0, lr=0.01, epochs=3)
    return build_method(MethodConfig(name=name, **config), 3, accelerator, **context)


def loss_of(method, epoch=0):
    return method.step(ImageIsCAM(), batch(), epoch)


def entries():
    """(z, observed positive) of the six entries, image-major."""
    return [(LOGITS[i][c], POSITIVE[i][c]) for i in range(2) for c in range(3)]


def test_an_ls_smooths_both_targets_by_epsilon(accelerator):
    # targets 0.9 (positive) and 0.1 (assumed negative): BCE = t sp(-z) + (1 - t) sp(z)
    expected = sum((0.9 if positive else 0.1) * sp(-z) + (0.1 if positive else 0.9) * sp(z)
                   for z, positive in entries()) / 6
    # written out: (0.9 sp(-1) + 0.1 sp(1)) + 0.1 sp(0) + 0.9 sp(0) + (0.1 sp(2) + 0.9 sp(-2)) + ...
    assert expected == pytest.approx((0.9 * sp(-1) + 0.1 * sp(1) + math.log(2) + 0.1 * sp(2) + 0.9 * sp(-2)
                                      + 0.1 * sp(-0.5) + 0.9 * sp(0.5) + 0.1 * sp(-2) + 0.9 * sp(2)
                                      + math.log(2)) / 6)
    assert loss_of(make("an_ls", accelerator)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_wan_weighs_each_assumed_negative_one_over_c_minus_1(accelerator):
    expected = (sp(-1) + sp(0) / 2 + sp(-2) / 2 + sp(0.5) / 2 + sp(2) / 2 + sp(0)) / 6  # C - 1 = 2
    assert loss_of(make("wan", accelerator)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_epr_is_the_positives_plus_the_squared_distance_to_k(accelerator):
    positives = (sp(-1) + sp(0)) / 6  # observed positives at (0, 0) z=1 and (1, 2) z=0, over 6 entries
    row_sums = [sigmoid(1) + sigmoid(0) + sigmoid(-2), sigmoid(0.5) + sigmoid(2) + sigmoid(0)]
    regulariser = ((row_sums[0] + row_sums[1]) / 2 - 1.5) ** 2 / 3 ** 2
    output = loss_of(make("epr", accelerator, epr_expected_positives=1.5))
    assert output.parts["loss_positive"].item() == pytest.approx(positives, rel=1e-6)
    assert output.parts["loss_epr"].item() == pytest.approx(regulariser, rel=1e-5)
    assert output.loss.item() == pytest.approx(positives + regulariser, rel=1e-6)
    # k = 0 takes the training split's mean number of positives (the context's 2.0)
    assert make("epr", accelerator).k == 2.0


def test_epr_without_any_k_is_one_error_line(accelerator):
    with pytest.raises(SPMLError, match="method.epr_expected_positives is 0"):
        build_method(MethodConfig(name="epr"), 3, accelerator, num_train_rows=8)


def entropy(z):
    p = sigmoid(z)
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_em_maximises_the_entropy_of_the_unannotated_labels(accelerator):
    expected = (sp(-1) - 0.2 * entropy(0) - 0.2 * entropy(-2) - 0.2 * entropy(0.5) - 0.2 * entropy(2) + sp(0)) / 6
    assert loss_of(make("em", accelerator)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_em_apl_trains_pseudo_negatives_toward_their_soft_target(accelerator):
    method = make("em_apl", accelerator, warm_up=1)
    method.pseudo_negative[2, 0] = True  # image 1 (row 2), class 0, labelled with score 0.25
    method.pseudo_target[2, 0] = 0.25
    # (1, 0): beta * BCE(0.5, 0.25) = 0.02 (0.25 sp(-0.5) + 0.75 sp(0.5)) instead of the entropy term
    expected = (sp(-1) - 0.2 * entropy(0) - 0.2 * entropy(-2) + 0.02 * (0.25 * sp(-0.5) + 0.75 * sp(0.5))
                - 0.2 * entropy(2) + sp(0)) / 6
    output = loss_of(method, epoch=0)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    assert output.counts["pseudo_negatives"].item() == 1 and output.counts["pseudo_negative_true_fn"].item() == 0
    # the step recorded the rows' scores for the next labelling
    assert method.visited.tolist() == [False, False, True, False, False, True, False, False]
    assert method.scores[5].tolist() == pytest.approx([sigmoid(1), sigmoid(0), sigmoid(-2)])
    assert method.observed_unknown[2].tolist() == [True, True, False]


def test_apl_labels_each_class_lowest_scores_once_an_epoch_from_the_warm_up(accelerator):
    # 4 rows, all visited; class 0 has 4 unannotated rows, class 1 has 2 (rows 0 and 1 observed positive).
    # epochs 3, warm-up 1: 2 rounds; share 1.0 -> per round floor(4 / 2) = 2 of class 0, floor(2 / 2) = 1 of class 1
    method = build_method(MethodConfig(name="em_apl", warm_up=1, apl_negative_share=1.0), 2, accelerator,
                          num_train_rows=4, epochs=3)
    method.visited.fill_(True)
    method.observed_unknown.copy_(torch.tensor([[True, False], [True, False], [True, True], [True, True]]))
    method.scores.copy_(torch.tensor([[0.4, 0.9], [0.1, 0.9], [0.3, 0.6], [0.2, 0.5]]))
    method.label_before_epoch(0)  # before the warm-up ends: nothing
    assert not method.pseudo_negative.any()
    method.label_before_epoch(1)
    assert method.pseudo_negative.tolist() == [[False, False], [True, False], [False, False], [True, True]]
    assert method.pseudo_target[:, 0].tolist() == pytest.approx([0, 0.1, 0, 0.2])
    method.label_before_epoch(1)  # once an epoch, also when called again (a resumed epoch)
    assert method.pseudo_negative.sum().item() == 3
    method.label_before_epoch(2)  # the next two of class 0, the last of class 1
    assert torch.equal(method.pseudo_negative, method.observed_unknown)  # every unannotated label by the end
    assert method.pseudo_target.flatten().tolist() == pytest.approx([0.4, 0, 0.1, 0, 0.3, 0.6, 0.2, 0.5])


# Large Loss, ll_delta_rel 20 (%): epoch 1 modifies ceil(6 x 0.2) = 2 of the 6 entries, the largest
# assumed-negative losses: (1, 1) sp(2) = 2.13 and (1, 0) sp(0.5) = 0.97 (not (0, 1) sp(0) = 0.69, (0, 2) sp(-2)).
AN_LOSS = (sp(-1) + sp(0) + sp(-2) + sp(0.5) + sp(2) + sp(0)) / 6
CORRECTED_LOSS = (sp(-1) + sp(0) + sp(-2) + sp(-0.5) + sp(-2) + sp(0)) / 6  # (1, 0), (1, 1) as positives


@pytest.mark.parametrize("name, expected", [
    ("ll_r", (sp(-1) + sp(0) + sp(-2) + 0 + 0 + sp(0)) / 6),
    ("ll_ct", CORRECTED_LOSS),
    ("ll_cp", CORRECTED_LOSS),
])
def test_large_loss_modifies_the_largest_assumed_negative_losses(accelerator, name, expected):
    method = make(name, accelerator, ll_delta_rel=20.0)
    assert loss_of(method, epoch=0).loss.item() == pytest.approx(AN_LOSS, rel=1e-6)  # rate 0 in epoch 0
    output = loss_of(method, epoch=1)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    counts = {key: value.item() for key, value in output.counts.items()}
    # flagged (1, 1) is a false negative, (1, 0) is not; the false negatives are (0, 1) and (1, 1)
    assert (counts["flagged"], counts["flagged_true_fn"], counts["false_negatives"]) == (2, 1, 2)


def test_ll_cp_corrections_persist_to_a_later_epoch_and_ll_ct_ones_do_not(accelerator):
    permanent, temporary = make("ll_cp", accelerator, ll_delta_rel=20.0), make("ll_ct", accelerator, ll_delta_rel=20.0)
    for method in (permanent, temporary):
        loss_of(method, epoch=1)
        method.config.ll_delta_rel = 0.0  # a later epoch that corrects nothing new
    assert permanent.corrected.nonzero().tolist() == [[2, 0], [2, 1]]  # image 1 is dataset row 2
    assert loss_of(permanent, epoch=2).loss.item() == pytest.approx(CORRECTED_LOSS, rel=1e-6)
    assert loss_of(temporary, epoch=2).loss.item() == pytest.approx(AN_LOSS, rel=1e-6)
    assert not hasattr(temporary, "corrected")


def test_boostlu_multiplies_positive_cam_values_by_alpha_in_training_and_evaluation(accelerator):
    # alpha 5: [2, 0] -> 5; [1, -1] -> 2; [-2, -2] -> -2; [1, 0] -> 2.5; [3, 1] -> 10; [-1, 1] -> 2
    boosted = [[5.0, 2.0, -2.0], [2.5, 10.0, 2.0]]
    method = make("boostlu", accelerator)
    expected = (sp(-5) + sp(2) + sp(-2) + sp(2.5) + sp(10) + sp(-2)) / 6  # LL-R at epoch 0: AN on the boosted logits
    assert loss_of(method, epoch=0).loss.item() == pytest.approx(expected, rel=1e-6)
    output = ImageIsCAM()(IMAGES)
    assert method.eval_logits(output).tolist() == boosted
    assert method.export_settings() == {EXPORT_KEY: 5.0}
    assert export_logits(output, method.export_settings()).tolist() == boosted  # inference.py's path
    assert export_logits(output, {}).tolist() == LOGITS
    assert make("an", accelerator).eval_logits(output).tolist() == LOGITS


def test_boostlu_on_ll_cp_stores_corrections_and_a_bad_base_is_one_error_line(accelerator):
    assert make("boostlu", accelerator, boostlu_base="ll_cp").correction == "permanent"
    with pytest.raises(SPMLError, match="method.boostlu_base must be one of"):
        make("boostlu", accelerator, boostlu_base="ll_x")


def test_role_losses_and_one_adam_step_on_the_batch_rows(accelerator):
    # First visit: estimates theta = 0 (e = 0.5) except the observed positives at logit(0.995).
    # k = mean over images of the summed estimates = 0.995 + 0.5 + 0.5, so the estimates' regulariser is 0.
    method = make("role", accelerator, epr_expected_positives=1.995)
    method.estimate_logits.zero_()
    estimates = [[0.995, 0.5, 0.5], [0.5, 0.5, 0.995]]
    cells = [(LOGITS[i][c], POSITIVE[i][c], estimates[i][c]) for i in range(2) for c in range(3)]
    # network: 0.5 mean[pos sp(-z) + e sp(-z) + (1 - e) sp(z)] + 0.5 (mean row sum of p - k)^2 / 9
    row_sums = [sum(sigmoid(z) for z in LOGITS[i]) for i in range(2)]
    network = (0.5 * sum(pos * sp(-z) + e * sp(-z) + (1 - e) * sp(z) for z, pos, e in cells) / 6
               + 0.5 * ((row_sums[0] + row_sums[1]) / 2 - 1.995) ** 2 / 9)
    # estimates: 0.5 mean[pos sp(-theta) + p sp(-theta) + (1 - p) sp(theta)], theta = logit(e)
    theta = {0.995: math.log(0.995 / 0.005), 0.5: 0.0}
    labels = 0.5 * sum(pos * sp(-theta[e]) + sigmoid(z) * sp(-theta[e]) + (1 - sigmoid(z)) * sp(theta[e])
                       for z, pos, e in cells) / 6
    output = loss_of(method)
    assert output.parts["loss_network"].item() == pytest.approx(network, rel=1e-5)
    assert output.parts["loss_estimates"].item() == pytest.approx(labels, rel=1e-5)
    assert output.loss.item() == pytest.approx(network + labels, rel=1e-5)
    # Gradient of the estimate loss: (e - pos + e - p) / 12; a first Adam step moves by lr x sign = 0.01 x 10.
    # positives: e = 0.995 > p: down; (0, 1) p = 0.5 = e: gradient 0, no move; (0, 2) p < 0.5: down; (1, 0), (1, 1): up
    step = 0.1
    assert method.estimate_logits[5].tolist() == pytest.approx([theta[0.995] - step, 0.0, -step], rel=1e-5, abs=1e-6)
    assert method.estimate_logits[2].tolist() == pytest.approx([step, step, theta[0.995] - step], rel=1e-5)
    assert method.visits.tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    gradient_02 = (0.5 - sigmoid(-2)) / 12
    assert method.adam_first[5, 2].item() == pytest.approx(0.1 * gradient_02, rel=1e-5)
    assert method.adam_second[5, 2].item() == pytest.approx(0.001 * gradient_02 ** 2, rel=1e-5)
    # untouched rows keep their initial estimates (uniform in +-logit(0.6), drawn from train.seed)
    fresh = make("role", accelerator, epr_expected_positives=1.995)
    assert torch.equal(fresh.estimate_logits[0], make("role", accelerator, epr_expected_positives=1.995).estimate_logits[0])
    assert fresh.estimate_logits.abs().max().item() <= math.log(1.5)


def test_a_row_written_twice_in_one_step_takes_the_first_writers_values():
    # gathered rows in rank order: rank 0 [3, 1], rank 1 [1, -1 (padding)]
    assert first_writers(torch.tensor([3, 1, 1, -1])).tolist() == [0, 1, 1, 0]


def gr_unannotated(z, w, b, mu, sigma, q_negative=1.0):
    """GR-Loss of one unannotated logit: V (K (1 - p^0.01) / 0.01 + (1 - K) (1 - (1 - p)^q-) / q-)."""
    p = sigmoid(z)
    k, v = sigmoid(w * p + b), math.exp(-0.5 * ((p - mu) / sigma) ** 2)
    return v * (k * (1 - p ** 0.01) / 0.01 + (1 - k) * (1 - (1 - p) ** q_negative) / q_negative)


@pytest.mark.parametrize("epoch, schedule, q_negative", [
    # 3 epochs, the authors' defaults: w 0 -> 2, b -2, mu 0.5 -> 0.8, sigma 2 -> 0.5. Epoch 0: w = 0 (their
    # epoch 1), mu and sigma already one third of the way: 0.6, 1.5. Epoch 2 (the last): w = 2 x 2/3, mu 0.8, sigma 0.5.
    (0, (0.0, -2.0, 0.6, 1.5), 1.0),
    (2, (4 / 3, -2.0, 0.8, 0.5), 0.5),
])
def test_gr_loss_weighs_each_unannotated_label_between_its_positive_and_negative_losses(accelerator, epoch, schedule,
                                                                                        q_negative):
    method = make("gr_loss", accelerator, gr_q_negative=q_negative)
    assert method.schedule(epoch) == pytest.approx(schedule)
    unannotated = [z for z, positive in entries() if not positive]  # 0, -2, 0.5, 2
    expected = (sp(-1) + sp(0) + sum(gr_unannotated(z, *schedule, q_negative) for z in unannotated)) / 6
    output = loss_of(method, epoch)
    assert output.loss.item() == pytest.approx(expected, rel=1e-5)
    w, b = schedule[:2]
    k_mean = sum(sigmoid(w * sigmoid(z) + b) for z in unannotated) / 4
    assert output.parts["k_mean"].item() == pytest.approx(k_mean, rel=1e-5)


def test_gr_loss_schedule_over_the_authors_eight_epochs():
    # their epoch e of T = 8: w = 2 (e - 1) / 8, mu = 0.5 + 0.3 e / 8; our epoch 7 is their 8th, the last
    method = build_method(MethodConfig(name="gr_loss"), 3, None, epochs=8)
    assert method.schedule(7) == pytest.approx((1.75, -2.0, 0.8, 0.5))
    assert method.schedule(3) == pytest.approx((0.75, -2.0, 0.65, 1.25))


class LabelsOnly:
    """A training split as the noisy oracle reads it: clean labels, a length, the datasets library's fingerprint."""

    _fingerprint = "labels-only"

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, column):
        assert column == "labels"
        return self.labels


def test_vlpl_trains_the_teachers_pseudo_positives_as_smoothed_positives_and_the_rest_as_em(accelerator, tmp_path):
    # a noiseless oracle teacher: dataset rows 5 and 2 carry the batch's clean labels, so it scores the two false
    # negatives (0, 1) z=0 and (1, 1) z=2 at 1 > 0.3: pseudo-positives, 0.7 x BCE against 0.9
    labels = torch.zeros(NUM_TRAIN_ROWS, 3)
    labels[5], labels[2] = LABELS[0], LABELS[1]
    images = TrainingImages(LabelsOnly(labels.tolist()), NUM_TRAIN_ROWS, tmp_path, tmp_path, ["a", "b", "c"])
    method = build_method(MethodConfig(name="vlpl", teacher="noisy_oracle", teacher_noise=0.0), 3, accelerator,
                          num_train_rows=NUM_TRAIN_ROWS, train_images=images)
    assert torch.equal(method.teacher_scores, labels)
    assert (tmp_path / "teacher_scores" / "noisy_oracle-0-labels-only.npy").is_file()
    expected = (sp(-1) + 0.7 * (0.9 * sp(0) + 0.1 * sp(0)) - 0.2 * entropy(-2)
                - 0.2 * entropy(0.5) + 0.7 * (0.9 * sp(-2) + 0.1 * sp(2)) + sp(0)) / 6
    output = loss_of(method)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    counts = {key: value.item() for key, value in output.counts.items()}
    assert (counts["flagged"], counts["flagged_true_fn"], counts["false_negatives"]) == (2, 2, 2)
    method.teacher_scores[2, 0] = 0.31  # (1, 0) z=0.5 now passes the threshold too, (1, 1) falls below it
    method.teacher_scores[2, 1] = 0.3
    expected += (0.7 * (0.9 * sp(-0.5) + 0.1 * sp(0.5)) + 0.2 * entropy(0.5)
                 - 0.7 * (0.9 * sp(-2) + 0.1 * sp(2)) - 0.2 * entropy(2)) / 6
    assert loss_of(method).loss.item() == pytest.approx(expected, rel=1e-6)


def test_vlpl_without_a_teacher_is_one_error_line(accelerator, tmp_path):
    images = TrainingImages(LabelsOnly([[0, 0, 0]] * 2), 2, tmp_path, tmp_path, ["a", "b", "c"])
    with pytest.raises(SPMLError, match=r"method.name=vlpl needs a teacher: method.teacher=noisy_oracle \| "
                                        "imagenet_mobilenet_v2 or module:attribute of your own"):
        build_method(MethodConfig(name="vlpl"), 3, accelerator, num_train_rows=2, train_images=images)


# Observed negatives (-1): image 1, class 0 (z = 0.5, clean 0) observed absent. A known negative costs its plain BCE
# against 0, sp(0.5), in every method: never smoothed, down-weighted, rejected, corrected, estimated or pseudo-labelled.
NEGATIVE = sp(0.5)


def negative_batch():
    step_batch = batch()
    step_batch["observed"][1, 0] = -1.0
    return step_batch


def negative_loss_of(method, epoch=0):
    return method.step(ImageIsCAM(), negative_batch(), epoch)


def test_an_trains_an_observed_negative_against_0(accelerator):
    assert negative_loss_of(make("an", accelerator)).loss.item() == pytest.approx(AN_LOSS, rel=1e-6)


def test_an_ls_does_not_smooth_an_observed_negative(accelerator):
    # as test_an_ls_smooths_both_targets_by_epsilon, but (1, 0) at target 0, not 0.1
    expected = (0.9 * sp(-1) + 0.1 * sp(1) + math.log(2) + 0.1 * sp(2) + 0.9 * sp(-2)
                + NEGATIVE + 0.1 * sp(-2) + 0.9 * sp(2) + math.log(2)) / 6
    assert negative_loss_of(make("an_ls", accelerator)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_wan_weighs_an_observed_negative_1(accelerator):
    expected = (sp(-1) + sp(0) / 2 + sp(-2) / 2 + NEGATIVE + sp(2) / 2 + sp(0)) / 6
    assert negative_loss_of(make("wan", accelerator)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_epr_adds_the_bce_of_an_observed_negative(accelerator):
    plain = loss_of(make("epr", accelerator, epr_expected_positives=1.5))
    output = negative_loss_of(make("epr", accelerator, epr_expected_positives=1.5))
    assert plain.parts["loss_negative"].item() == 0.0
    assert output.parts["loss_negative"].item() == pytest.approx(NEGATIVE / 6, rel=1e-6)
    assert output.loss.item() == pytest.approx(plain.loss.item() + NEGATIVE / 6, rel=1e-6)


def test_em_trains_an_observed_negative_against_0_not_its_entropy(accelerator):
    expected = (sp(-1) - 0.2 * entropy(0) - 0.2 * entropy(-2) + NEGATIVE - 0.2 * entropy(2) + sp(0)) / 6
    assert negative_loss_of(make("em", accelerator)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_em_apl_never_pseudo_labels_an_observed_negative(accelerator):
    method = make("em_apl", accelerator, warm_up=1)
    method.pseudo_negative[2, 0] = True  # as if labelled: the observation wins
    method.pseudo_target[2, 0] = 0.25
    expected = (sp(-1) - 0.2 * entropy(0) - 0.2 * entropy(-2) + NEGATIVE - 0.2 * entropy(2) + sp(0)) / 6
    output = negative_loss_of(method)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    assert output.counts["pseudo_negatives"].item() == 0
    assert method.observed_unknown[2].tolist() == [False, True, False]  # not a candidate of the next labelling


# Large Loss at epoch 1 (2 of 6 entries): without the observation, (1, 0) sp(0.5) = 0.97 would be the second
# largest; as an observed negative it is no candidate, so (1, 1) sp(2) and (0, 1) sp(0) = 0.69 are modified.
@pytest.mark.parametrize("name, expected", [
    ("ll_r", (sp(-1) + 0 + sp(-2) + NEGATIVE + 0 + sp(0)) / 6),
    ("ll_ct", (sp(-1) + sp(0) + sp(-2) + NEGATIVE + sp(-2) + sp(0)) / 6),
    ("ll_cp", (sp(-1) + sp(0) + sp(-2) + NEGATIVE + sp(-2) + sp(0)) / 6),
])
def test_large_loss_never_modifies_an_observed_negative(accelerator, name, expected):
    method = make(name, accelerator, ll_delta_rel=20.0)
    output = negative_loss_of(method, epoch=1)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    counts = {key: value.item() for key, value in output.counts.items()}
    assert (counts["flagged"], counts["flagged_true_fn"], counts["false_negatives"]) == (2, 2, 2)
    if name == "ll_cp":
        assert method.corrected.nonzero().tolist() == [[2, 1], [5, 1]]


def test_boostlu_never_rejects_an_observed_negative(accelerator):
    # boosted logits [5, 2, -2], [2.5, 10, 2]: (1, 0) sp(2.5) would be the second largest; (0, 1) sp(2) is rejected
    expected = (sp(-5) + 0 + sp(-2) + sp(2.5) + 0 + sp(-2)) / 6
    output = negative_loss_of(make("boostlu", accelerator, ll_delta_rel=20.0), epoch=1)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)


def test_gr_loss_trains_an_observed_negative_against_0(accelerator):
    schedule = (0.0, -2.0, 0.6, 1.5)
    unknown = [0.0, -2.0, 2.0]
    expected = (sp(-1) + sp(0) + NEGATIVE + sum(gr_unannotated(z, *schedule) for z in unknown)) / 6
    output = negative_loss_of(make("gr_loss", accelerator), epoch=0)
    assert output.loss.item() == pytest.approx(expected, rel=1e-5)
    k_mean = sum(sigmoid(schedule[1]) for _ in unknown) / 3  # w = 0 in epoch 0
    assert output.parts["k_mean"].item() == pytest.approx(k_mean, rel=1e-5)


def test_role_pins_an_observed_negative_to_0(accelerator):
    method = make("role", accelerator, epr_expected_positives=1.995)
    method.estimate_logits.zero_()
    theta_positive = math.log(0.995 / 0.005)
    theta = [[theta_positive, 0.0, 0.0], [-theta_positive, 0.0, theta_positive]]  # first visit: -1 at logit(0.005)
    negative = [[0, 0, 0], [1, 0, 0]]
    cells = [(LOGITS[i][c], POSITIVE[i][c], negative[i][c], theta[i][c]) for i in range(2) for c in range(3)]
    # network: 0.5 mean[pos sp(-z) + neg sp(z) + BCE(z, e or 0 at the negative)]
    network = 0.5 * sum(pos * sp(-z) + neg * sp(z) + (sp(z) if neg else sigmoid(t) * sp(-z) + (1 - sigmoid(t)) * sp(z))
                        for z, pos, neg, t in cells) / 6
    row_sums = [sum(sigmoid(z) for z in LOGITS[i]) for i in range(2)]
    network += 0.5 * ((row_sums[0] + row_sums[1]) / 2 - 1.995) ** 2 / 9
    # estimates: 0.5 mean[pos sp(-theta) + BCE(theta, p or 0 at the negative)] + 0.5 EPR of the estimates
    labels = 0.5 * sum(pos * sp(-t) + (sp(t) if neg else sigmoid(z) * sp(-t) + (1 - sigmoid(z)) * sp(t))
                       for z, pos, neg, t in cells) / 6
    estimate_sums = [sum(sigmoid(t) for t in theta[i]) for i in range(2)]
    labels += 0.5 * ((estimate_sums[0] + estimate_sums[1]) / 2 - 1.995) ** 2 / 9
    output = negative_loss_of(method)
    assert output.parts["loss_network"].item() == pytest.approx(network, rel=1e-5)
    assert output.parts["loss_estimates"].item() == pytest.approx(labels, rel=1e-5)
    # the negative's estimate moves toward 0 (one Adam step of lr 0.1), never toward the prediction
    assert method.estimate_logits[2, 0].item() == pytest.approx(-theta_positive - 0.1, rel=1e-5)


def test_vlpl_never_makes_an_observed_negative_a_pseudo_positive(accelerator, tmp_path):
    labels = torch.zeros(NUM_TRAIN_ROWS, 3)
    labels[5], labels[2] = LABELS[0], LABELS[1]
    labels[2, 0] = 1.0  # the teacher scores the observed negative (1, 0) at 1 as well
    images = TrainingImages(LabelsOnly(labels.tolist()), NUM_TRAIN_ROWS, tmp_path, tmp_path, ["a", "b", "c"])
    method = build_method(MethodConfig(name="vlpl", teacher="noisy_oracle", teacher_noise=0.0), 3, accelerator,
                          num_train_rows=NUM_TRAIN_ROWS, train_images=images)
    expected = (sp(-1) + 0.7 * (0.9 * sp(0) + 0.1 * sp(0)) - 0.2 * entropy(-2)
                + NEGATIVE + 0.7 * (0.9 * sp(-2) + 0.1 * sp(2)) + sp(0)) / 6
    output = negative_loss_of(method)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    assert output.counts["flagged"].item() == 2


def test_false_negatives_count_only_unknown_entries():
    from ignore.losses.base import false_negatives, observed_negative, unannotated

    step_batch = negative_batch()
    step_batch["labels"][1, 0] = 1.0  # even a clean positive is no false negative once observed
    assert unannotated(step_batch).tolist() == [[False, True, True], [False, True, False]]
    assert observed_negative(step_batch).tolist() == [[False, False, False], [True, False, False]]
    assert false_negatives(step_batch).tolist() == [[False, True, False], [False, True, False]]
