"""A deliberately noisy oracle teacher: the clean training labels plus seeded noise.

score = clip(label + noise x (2u - 1), 0, 1), u uniform in [0, 1) and a function of (dataset row, class)
alone (rejection.entry_uniforms), so the table is the same on any number of processes and in every run.
A stand-in that runs offline, for tests and for measuring how a method fares as the teacher worsens: with
method.teacher_noise n and threshold t, a clean positive passes t when n (2u - 1) > t - 1, a clean negative
when n (2u - 1) > t. It reads the clean labels, which no real teacher can.
"""
import numpy as np
import torch

from .rejection import entry_uniforms

NOISE_SEED = 0x7EAC  # the oracle's own: a teacher stays the same whatever train.seed is
NOISE_EPOCH = 0  # entry_uniforms' epoch slot: the noise never changes


class NoisyOracle:
    def __init__(self, clean_labels, noise):
        self.clean_labels = torch.as_tensor(np.asarray(clean_labels, dtype=np.float32))
        self.noise = noise
        self.name = f"noisy_oracle-{noise:g}"

    @classmethod
    def from_settings(cls, config, images, device):
        return cls(images.split["labels"], config.teacher_noise)

    def scores_of_rows(self, rows):
        rows = torch.as_tensor(rows).long().cpu()
        uniforms = entry_uniforms(NOISE_SEED, NOISE_EPOCH, rows, self.clean_labels.shape[1])
        return (self.clean_labels[rows] + self.noise * (2 * uniforms - 1)).clamp(0, 1)
