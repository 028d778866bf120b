"""How well a method's scores find the false negatives among the unannotated labels.

A method's step output may carry fn_scores: {"scores": {name: (B, C)}, "candidates": (B, C)
bool (the unannotated labels), "targets": (B, C) bool (those the clean labels mark
positive)}. The loop collects them over an epoch on every rank; `FNScoreCollector.summary`
gathers them and gives each score's AUROC (1 = every false negative ranks above every true
negative, 0.5 = chance) and the scores of both groups for histograms. Diagnostics only: no
loss reads the clean labels through here.
"""
import numpy as np
import torch


def auroc(scores, targets):
    """Area under the ROC curve (ties count one half, as sklearn's roc_auc_score); nan when
    one of the two groups is empty."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=bool)
    num_positive = int(targets.sum())
    num_negative = len(targets) - num_positive
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # mid-ranks (1-based) of each run of equal scores
    starts = np.r_[0, np.nonzero(sorted_scores[1:] != sorted_scores[:-1])[0] + 1]  # -inf ties too
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    positive_rank_sum = ranks[targets].sum()
    return float((positive_rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative))


class FNScoreCollector:
    """The false-negative scores of one epoch's steps, kept on the device until the epoch ends."""

    def __init__(self):
        self.names, self.rows = None, []

    def add(self, fn_scores):
        scores = fn_scores["scores"]
        self.names = sorted(scores)
        columns = [scores[name].detach().float() for name in self.names]
        columns += [fn_scores["targets"].float(), fn_scores["candidates"].float()]
        self.rows.append(torch.stack(columns, dim=-1).flatten(0, 1))  # (B * C, scores + 2)

    def gathered(self, accelerator):
        """(N, scores + 2) numpy array of the candidate entries of every rank."""
        local = torch.cat(self.rows)
        padded = accelerator.pad_across_processes(local, dim=0)  # zero rows: candidate column 0
        table = accelerator.gather(padded).cpu().numpy()
        return table[table[:, -1] == 1]

    def summary(self, accelerator):
        """({"<score>_auroc": value, ...}, {score: {"true_fn": values, "true_negative": values}})."""
        if not self.rows:
            return {}, {}
        table = self.gathered(accelerator)
        targets = table[:, -2] == 1
        aurocs, groups = {}, {}
        for column, name in enumerate(self.names):
            aurocs[f"{name}_auroc"] = auroc(table[:, column], targets)
            groups[name] = {"true_fn": table[targets, column], "true_negative": table[~targets, column]}
        return aurocs, groups


def histogram(groups, bins=20):
    """Counts of both groups over the same bins, for metrics.json; infinite scores (a label
    that a gate ruled out) are left out."""
    groups = {name: group[np.isfinite(group)] for name, group in groups.items()}
    values = np.concatenate(list(groups.values()))
    if len(values) == 0:
        return {}
    edges = np.histogram_bin_edges(values, bins=bins)
    return {"edges": edges.round(6).tolist(),
            **{name: np.histogram(group, bins=edges)[0].tolist() for name, group in groups.items()}}
