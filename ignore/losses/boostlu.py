"""BoostLU (Kim et al., CVPR 2023): a Large Loss variant trained and evaluated on boosted CAMs.

The positive values of the class activation maps are multiplied by alpha (5) before the
global average, which enlarges the attributions of the positive regions; the authors apply
it in training and at inference, so its `eval_logits` and the export (cam_boost.py) do too.
It needs a model whose logits are the global average of its "cam" (the CAM classifier).
"""
from ..errors import SPMLError
from ..models.cam_boost import EXPORT_KEY, boosted_logits
from .large_loss import LargeLoss
from .registry import BOOSTLU_BASES, METHODS


class BoostLU(LargeLoss):
    def __init__(self, config, num_classes, accelerator, **context):
        if config.boostlu_base not in BOOSTLU_BASES:
            raise SPMLError(f"method.boostlu_base must be one of {BOOSTLU_BASES}, got '{config.boostlu_base}'")
        _, _, arguments = METHODS[config.boostlu_base]  # the Large Loss variant's own correction
        super().__init__(config, num_classes, accelerator, **arguments, **context)

    def logits(self, output):
        return boosted_logits(output["cam"].float(), self.config.boostlu_alpha)

    eval_logits = logits  # boosted at inference too, as in training

    def export_settings(self):
        return {EXPORT_KEY: self.config.boostlu_alpha}
