"""Multi-label metrics: per-class average precision (sklearn's definition), mAP, CF1, OF1, and the
per-class decision thresholds that maximise F1.

Each takes `verified`: None when the labels are complete, else an (N, C) boolean mask of the entries whose label
is known (OpenImages verifies some classes of an image, present or absent, and says nothing of the others). Each
class is then scored on its verified entries only, as OpenImages' own evaluation does; an unverified entry is
neither a positive, a negative nor a prediction.
"""
import numpy as np


def average_precision(scores, labels):
    """AP of one class: sum over distinct score thresholds of (R_n - R_{n-1}) * P_n.

    The same step-wise definition as sklearn.metrics.average_precision_score, ties included.
    Returns nan when the class has no positive.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    num_positive = labels.sum()
    if num_positive == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    # the last index of each run of equal scores: one threshold per distinct score
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_positives / predicted
    recall_step = np.diff(np.r_[0, true_positives]) / num_positive
    return float((recall_step * precision).sum())


def multilabel_metrics(scores, labels, threshold=0.5, verified=None):
    """scores: (N, C) probabilities; labels: (N, C) in {0, 1}; verified: see the module. Percentages.

    mAP follows the literature's code: a class with no positive in the set scores 0 (it is
    counted in `classes_without_positive` so a table can say so). Under `verified` that is a class
    without a verified positive, and `verified_entries` counts the entries scored.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    verified = None if verified is None else np.asarray(verified) == 1
    per_class = np.array([average_precision(*class_entries(scores, labels, verified, c))
                          for c in range(labels.shape[1])])
    without_positive = np.isnan(per_class)
    per_class = np.where(without_positive, 0.0, per_class)

    class_f1, overall_f1 = cf1_of1(scores, labels, threshold, verified)
    metrics = {
        "mAP": 100 * per_class.mean(),
        "per_class_AP": (100 * per_class).tolist(),
        "CF1": class_f1,
        "OF1": overall_f1,
        "classes_without_positive": int(without_positive.sum()),
    }
    if verified is not None:
        metrics["verified_entries"] = int(verified.sum())
    return metrics


def class_entries(scores, labels, verified, column):
    """One class's scores and labels: every image's, or under `verified` those of the images that verify it."""
    if verified is None:
        return scores[:, column], labels[:, column]
    known = verified[:, column]
    return scores[known, column], labels[known, column]


def cf1_of1(scores, labels, threshold=0.5, verified=None):
    """CF1 and OF1 in percent at `threshold`: one probability, or one per class (C,).

    CF1 is the F1 of the per-class mean precision and mean recall, OF1 the F1 of all the
    predictions pooled: the multi-label literature's definitions. Under `verified` (see the module)
    only the verified entries count, as predictions and as labels.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    predicted = scores >= np.asarray(threshold, dtype=np.float64)
    if verified is not None:
        verified = np.asarray(verified) == 1
        predicted, labels = predicted & verified, labels & verified
    true_positive = (predicted & labels).sum(axis=0)
    class_precision = true_positive / np.maximum(predicted.sum(axis=0), 1)
    class_recall = true_positive / np.maximum(labels.sum(axis=0), 1)
    overall_precision = true_positive.sum() / max(predicted.sum(), 1)
    overall_recall = true_positive.sum() / max(labels.sum(), 1)
    return 100 * f1(class_precision.mean(), class_recall.mean()), 100 * f1(overall_precision, overall_recall)


def f1_thresholds(scores, labels, fallback=0.5, verified=None):
    """Per class, the probability threshold (predict at or above it) with the highest F1 on (scores, labels),
    over the class's verified entries under `verified` (see the module).

    Each distinct score of a class is a candidate cut; of the cuts with the best F1 the highest wins
    (the fewest predictions), and the threshold goes midway between the lowest score it predicts and the
    next lower one, so that a new image scoring a little under the last positive kept is still predicted.
    A class without a (verified) positive here has no F1 to maximise: it gets the median threshold of the classes
    that have one (the downward pull of the assumed negatives is shared by every class), or `fallback`
    when no class has a positive.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    verified = None if verified is None else np.asarray(verified) == 1
    thresholds = np.array([best_f1_cut(*class_entries(scores, labels, verified, c)) for c in range(labels.shape[1])])
    chosen = ~np.isnan(thresholds)
    return np.where(chosen, thresholds, np.median(thresholds[chosen]) if chosen.any() else fallback)


def best_f1_cut(scores, labels):
    """The F1-maximising threshold of one class (see f1_thresholds); nan when it has no positive."""
    num_positive = labels.sum()
    if num_positive == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # one cut per distinct score
    true_positives = np.cumsum(labels)[last_of_tie]
    f1_at_cut = 2 * true_positives / (last_of_tie + 1 + num_positive)
    last = last_of_tie[np.argmax(f1_at_cut)]  # argmax: the first best, the highest cut
    lowest_kept = scores[last]
    return float(lowest_kept if last == len(scores) - 1 else (lowest_kept + scores[last + 1]) / 2)


def f1(precision, recall):
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def results_table(class_names, metrics, split):
    """Per-class AP of `split` as text, a few classes a line."""
    cells = [f"{name[:14]:>14} {ap:6.2f}" for name, ap in zip(class_names, metrics["per_class_AP"])]
    return "\n".join([f"{split} AP per class:"] + ["   ".join(cells[i:i + 4]) for i in range(0, len(cells), 4)])


def verified_note(metrics):
    """What the metrics of a split with incomplete labels covered, for a printed line; "" for complete labels."""
    if "verified_entries" not in metrics:
        return ""
    return (f"  (on the {metrics['verified_entries']} verified labels only; {metrics['classes_without_positive']} "
            "classes without a verified positive count as AP 0)")
