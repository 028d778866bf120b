"""VLPL-style pseudo-positives (Xing et al., 2024): EM, plus the unannotated labels that a frozen teacher scores
above a threshold trained as positives.

The loss of an entry: BCE of the observed positive; for a pseudo-positive (unannotated, teacher score >
`teacher_threshold`) beta x BCE against a smoothed target 0.9 (the authors' fixed 0.9 / 0.1); for any other
unannotated label minus alpha x its entropy (em.py); an observed negative (-1) is known: BCE against 0, never a
pseudo-positive. Means over the B x C entries, as the authors.

The teacher's scores come from teacher.py: computed once per training row before the first step, a buffer
of the method identical on every rank (so the pseudo-labels are too) and checkpointed, so a resume trains on
exactly the same ones. The authors score the augmented training view with CLIP at every step instead.
"""
import torch

from .base import (FN_RATIOS, Method, StepOutput, bce, entry_mean, fn_counts, observed_positive, unannotated,
                   weak_logits)
from .em import entropy, known_bce
from .teacher import build_teacher, shared_teacher_scores, teacher_name

PSEUDO_POSITIVE_TARGET = 0.9


class TeacherPseudoPositives(Method):
    ratios = {**FN_RATIOS}  # fn_precision, fn_recall of the pseudo-positives, against the clean labels

    def __init__(self, config, num_classes, accelerator, **context):
        super().__init__(config, num_classes, accelerator, **context)
        teacher = build_teacher(config, self.train_images, accelerator.device)  # not kept: its weights are not ours
        scores = shared_teacher_scores(accelerator, teacher, teacher_name(teacher, config), self.train_images)
        self.register_buffer("teacher_scores", scores)

    def step(self, model, batch, epoch):
        _, logits = weak_logits(model, batch)
        positive = observed_positive(batch)
        unknown = unannotated(batch)
        pseudo_positive = unknown & (self.teacher_scores[batch["index"]] > self.config.teacher_threshold)
        smoothed = bce(logits, torch.full_like(logits, PSEUDO_POSITIVE_TARGET))
        unknown_loss = torch.where(pseudo_positive, self.config.vlpl_beta * smoothed,
                                   -self.config.em_alpha * entropy(logits))
        loss_matrix = torch.where(unknown, unknown_loss, known_bce(logits, positive))
        loss = entry_mean(loss_matrix)
        return StepOutput(loss, logits, {"loss_vlpl": loss}, fn_counts(pseudo_positive, batch))
