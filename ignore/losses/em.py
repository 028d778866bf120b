"""EM and EM+APL (Zhou et al., ECCV 2022, "Acknowledging the Unknown").

EM: BCE on the observed positive; on every unannotated label, minus alpha times the entropy
of its prediction (maximised entropy: the unknown labels are left uncertain instead of
pushed to 0). APL adds asymmetric pseudo-labels: from the epoch `method.warm_up` on, before
each epoch, each class's lowest-scored unannotated labels become soft negatives (target =
their score at labelling time) trained with weight beta, so that by the last epoch
`apl_negative_share` of them are labelled (the authors: 0.9 / (epochs - warm-up) a round).

One difference from the authors' code: they score the training set with an extra pass in
eval mode after each epoch; here the scores are the sigmoid outputs the training steps of the
previous epoch produced (no second pass, one loop). Losses are means over the B x C entries,
as theirs. An observed negative (-1) is known: BCE against 0, never an entropy term nor a
pseudo-label.
"""
import torch
import torch.nn.functional as F

from .base import (Method, StepOutput, bce, entry_mean, false_negatives, observed_positive, unannotated,
                   weak_logits)
from .row_state import write_shared_rows


def entropy(logits):
    """Binary entropy of sigmoid(logits) in logits form: softplus(z) - sigmoid(z) z."""
    return F.softplus(logits) - torch.sigmoid(logits) * logits


def known_bce(logits, positive):
    """BCE of the observed labels: against 1 at the observed positives, 0 at the observed negatives."""
    return bce(logits, positive.float())


class EntropyMaximisation(Method):
    ratios = {"pseudo_negative_error": ("pseudo_negative_true_fn", "pseudo_negatives")}

    def __init__(self, config, num_classes, accelerator, pseudo_labels=False, **context):
        super().__init__(config, num_classes, accelerator, **context)
        self.pseudo_labels = pseudo_labels
        if pseudo_labels:  # per-image state, shared by the ranks and checkpointed
            rows = self.num_train_rows
            self.register_buffer("scores", torch.zeros(rows, num_classes))
            self.register_buffer("observed_unknown", torch.zeros(rows, num_classes, dtype=torch.bool))
            self.register_buffer("visited", torch.zeros(rows, dtype=torch.bool))
            self.register_buffer("pseudo_negative", torch.zeros(rows, num_classes, dtype=torch.bool))
            self.register_buffer("pseudo_target", torch.zeros(rows, num_classes))
            self.register_buffer("labelled_epoch", torch.tensor(-1))
            self._checked_epoch = None

    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        positive, unknown = observed_positive(batch), unannotated(batch)
        loss_matrix = torch.where(unknown, -self.config.em_alpha * entropy(logits), known_bce(logits, positive))
        counts = {}
        if self.pseudo_labels:
            self.label_before_epoch(epoch)
            rows = batch["index"]
            pseudo = self.pseudo_negative[rows] & unknown
            pseudo_loss = self.config.apl_beta * bce(logits, self.pseudo_target[rows])
            loss_matrix = torch.where(pseudo, pseudo_loss, loss_matrix)
            write_shared_rows(self.accelerator, rows, [self.scores, self.observed_unknown, self.visited],
                              [torch.sigmoid(logits.detach()), unknown,
                               torch.ones_like(rows, dtype=torch.bool)])
            counts = {"pseudo_negatives": pseudo.sum(), "pseudo_negative_true_fn": (pseudo & false_negatives(batch)).sum()}
        loss = entry_mean(loss_matrix)
        return StepOutput(loss, logits, {"loss_em": loss}, counts)

    @torch.no_grad()
    def label_before_epoch(self, epoch):
        """Once per epoch from the warm-up on: the new pseudo-negatives, from the last epoch's scores.

        The same on every rank: the buffers it reads are. One host read per epoch."""
        if epoch == self._checked_epoch:
            return
        self._checked_epoch = epoch
        rounds = self.epochs - self.config.warm_up
        if epoch < max(self.config.warm_up, 1) or rounds <= 0 or int(self.labelled_epoch) >= epoch:
            return
        unknown = self.observed_unknown & self.visited[:, None]
        per_round = torch.floor(self.config.apl_negative_share * unknown.sum(dim=0) / rounds)  # (C,)
        candidates = unknown & ~self.pseudo_negative
        scores = torch.where(candidates, self.scores, torch.full_like(self.scores, float("inf")))
        ranks = torch.empty_like(scores, dtype=torch.long)
        ranks.scatter_(0, scores.argsort(dim=0, stable=True),
                       torch.arange(len(scores), device=scores.device)[:, None].expand_as(scores).contiguous())
        chosen = (ranks < per_round) & candidates  # each class's lowest scores
        self.pseudo_target.copy_(torch.where(chosen, self.scores, self.pseudo_target))
        self.pseudo_negative |= chosen
        self.labelled_epoch.fill_(epoch)
