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
from .row_state import read_rows, row_blocks, whole_table_update, write_shared_rows

DIGIT_BITS = 8  # the radix select's digit: 4 passes over a table of float32 scores


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
            self.register_table("scores", (num_classes,))
            self.register_table("observed_unknown", (num_classes,), torch.bool)
            self.register_table("visited", dtype=torch.bool)
            self.register_table("pseudo_negative", (num_classes,), torch.bool)
            self.register_table("pseudo_target", (num_classes,))
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
            pseudo = read_rows(self.pseudo_negative, rows) & unknown
            pseudo_loss = self.config.apl_beta * bce(logits, read_rows(self.pseudo_target, rows))
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

        The same on every rank: the buffers it reads are. A few host reads per epoch."""
        if epoch == self._checked_epoch:
            return
        self._checked_epoch = epoch
        rounds = self.epochs - self.config.warm_up
        if epoch < max(self.config.warm_up, 1) or rounds <= 0 or int(self.labelled_epoch) >= epoch:
            return
        with whole_table_update(self.accelerator, self.scores) as updates_here:
            if updates_here:
                self.label_lowest(rounds)
        self.labelled_epoch.fill_(epoch)

    def block(self, start, stop):
        """Rows start..stop: their scores, their unannotated labels (visited rows only), and of those the ones
        not pseudo-labelled yet (the candidates)."""
        unknown = self.observed_unknown[start:stop] & self.visited[start:stop, None]
        return self.scores[start:stop], unknown, unknown & ~self.pseudo_negative[start:stop]

    def label_lowest(self, rounds):
        """Label each class's `per_round` lowest-scored candidates, ties to the lower row: what a stable sort of each
        column picks, found block of rows by block (row_state.row_blocks), so that no N x C temporary is made.

        A radix select: scores are >= 0, so their float32 bits sort as they do; 4 passes of DIGIT_BITS each narrow
        down each class's k-th lowest key, a fifth labels the keys below it and the first ties up to k."""
        blocks, classes = row_blocks(self.scores), self.num_classes
        device = self.scores.device
        unknown = torch.zeros(classes, dtype=torch.long, device=device)
        for start, stop in blocks:
            unknown += self.block(start, stop)[1].sum(dim=0)
        per_round = torch.floor(self.config.apl_negative_share * unknown / rounds).long()  # (C,)
        digits = 1 << DIGIT_BITS
        offsets = torch.arange(classes, device=device) * digits
        key, wanted = torch.zeros(classes, dtype=torch.int32, device=device), None
        for shift in range(32 - DIGIT_BITS, -1, -DIGIT_BITS):
            histogram = torch.zeros(classes * digits, dtype=torch.long, device=device)
            for start, stop in blocks:
                scores, _, candidates = self.block(start, stop)
                keys = scores.contiguous().view(torch.int32)
                if shift + DIGIT_BITS < 32:  # only the keys whose higher digits are the k-th's
                    candidates = candidates & ((keys >> (shift + DIGIT_BITS)) == (key >> (shift + DIGIT_BITS)))
                histogram += torch.bincount((offsets + ((keys >> shift) & (digits - 1)))[candidates],
                                            minlength=classes * digits)
            cumulative = histogram.view(classes, digits).cumsum(dim=1)
            if wanted is None:  # k: per_round, or every candidate when there are fewer
                wanted = torch.minimum(per_round, cumulative[:, -1])
            digit = (cumulative < wanted[:, None]).sum(dim=1)  # the bucket that holds the k-th
            wanted = wanted - torch.where(digit > 0, cumulative.gather(1, (digit - 1).clamp(min=0)[:, None])[:, 0], 0)
            key = key | (digit.int() << shift)
        ties_before = torch.zeros(classes, dtype=torch.long, device=device)  # `wanted`: the ties still to label
        for start, stop in blocks:
            scores, _, candidates = self.block(start, stop)
            keys = scores.contiguous().view(torch.int32)
            ties = candidates & (keys == key)
            rank = ties_before + ties.long().cumsum(dim=0) - ties.long()  # among the class's ties, in row order
            chosen = candidates & ((keys < key) | (ties & (rank < wanted)))
            ties_before += ties.sum(dim=0)
            self.pseudo_target[start:stop] = torch.where(chosen, scores, self.pseudo_target[start:stop])
            self.pseudo_negative[start:stop] |= chosen
