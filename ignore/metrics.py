"""Multi-label metrics: per-class average precision (sklearn's definition), mAP, CF1, OF1."""
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


def multilabel_metrics(scores, labels, threshold=0.5):
    """scores: (N, C) probabilities; labels: (N, C) in {0, 1}. Percentages.

    mAP follows the literature's code: a class with no positive in the set scores 0 (it is
    counted in `classes_without_positive` so a table can say so).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    per_class = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1])])
    without_positive = np.isnan(per_class)
    per_class = np.where(without_positive, 0.0, per_class)

    predicted = scores >= threshold
    true_positive = (predicted & labels).sum(axis=0)
    class_precision = true_positive / np.maximum(predicted.sum(axis=0), 1)
    class_recall = true_positive / np.maximum(labels.sum(axis=0), 1)
    cp, cr = class_precision.mean(), class_recall.mean()
    op = true_positive.sum() / max(predicted.sum(), 1)
    overall_recall = true_positive.sum() / max(labels.sum(), 1)
    return {
        "mAP": 100 * per_class.mean(),
        "per_class_AP": (100 * per_class).tolist(),
        "CF1": 100 * f1(cp, cr),
        "OF1": 100 * f1(op, overall_recall),
        "classes_without_positive": int(without_positive.sum()),
    }


def f1(precision, recall):
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def results_table(class_names, metrics, split):
    """Per-class AP of `split` as text, a few classes a line."""
    cells = [f"{name[:14]:>14} {ap:6.2f}" for name, ap in zip(class_names, metrics["per_class_AP"])]
    return "\n".join([f"{split} AP per class:"] + ["   ".join(cells[i:i + 4]) for i in range(0, len(cells), 4)])
