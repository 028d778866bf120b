"""The one place where method names are listed, with the choices of the methods' string settings.

Names only: a method's module (and torch) is imported when the method is built, so the
config can check `method.name` against this list in a fraction of a second.
"""
import importlib

from ..errors import SPMLError

# name: (module in ignore/losses, class, keyword arguments)
METHODS = {
    "an": ("an", "AssumeNegative", {}),
    "full": ("full", "FullLabels", {}),
    "ignore": ("ignore", "Ignore", {}),
    # IGNORE's controls: its losses and step, another rejected set (rejection.py)
    "never_reject": ("ignore", "Ignore", {"rejection": "never"}),
    "random_reject": ("ignore", "Ignore", {"rejection": "random"}),
    "oracle_reject": ("ignore", "Ignore", {"rejection": "oracle"}),  # reads the clean labels
    # the baselines of SPEC section 3
    "an_ls": ("an_ls", "AssumeNegativeSmoothed", {}),
    "wan": ("wan", "WeightedAssumeNegative", {}),
    "epr": ("epr", "ExpectedPositiveRegulariser", {}),
    "role": ("role", "LabelEstimates", {}),
    "em": ("em", "EntropyMaximisation", {}),
    "em_apl": ("em", "EntropyMaximisation", {"pseudo_labels": True}),
    "ll_r": ("large_loss", "LargeLoss", {"correction": "reject"}),
    "ll_ct": ("large_loss", "LargeLoss", {"correction": "temporary"}),
    "ll_cp": ("large_loss", "LargeLoss", {"correction": "permanent"}),
    "boostlu": ("boostlu", "BoostLU", {}),  # on method.boostlu_base
    "gr_loss": ("gr_loss", "GeneralisedRobustLoss", {}),
    "vlpl": ("vlpl", "TeacherPseudoPositives", {}),  # reads method.teacher
}

# method.teacher's built-in values: (module under ignore/, class), each built by its from_settings(config, images,
# device); any other value is module:attribute of the user's own (teacher.py)
TEACHERS = {
    "noisy_oracle": ("losses.noisy_oracle", "NoisyOracle"),  # reads the clean training labels
    "imagenet_mobilenet_v2": ("models.imagenet_teacher", "ImageNetTeacher"),
}

# The fixed values of the methods' other string settings (the config checks them when it is parsed).
CAM_NORMALISATIONS = ("image", "authors")  # masking.py
MASK_FILLS = ("mean", "black")
GAPS = ("drop", "absolute")
MASKED_BATCHNORM_MODES = ("batch", "eval")
BOOSTLU_BASES = ("ll_r", "ll_ct", "ll_cp")  # Large Loss variants BoostLU can train with
RULES = ("ema", "calibrated")  # IGNORE's rejection rule: the paper's EMA thresholds, or calibration.py

CHOICES = {
    "method.name": tuple(METHODS),
    "method.cam_normalisation": CAM_NORMALISATIONS,
    "method.mask_fill": MASK_FILLS,
    "method.gap": GAPS,
    "method.masked_batchnorm": MASKED_BATCHNORM_MODES,
    "method.boostlu_base": BOOSTLU_BASES,
    "method.rule": RULES,
}


def build_method(config, num_classes, accelerator, **context):
    """context: seed, normalisation, num_train_rows, positives_per_image, lr, epochs, train_images (see Method)."""
    if config.name not in METHODS:
        raise SPMLError(f"method.name '{config.name}' is not one of {sorted(METHODS)}")
    module, name, arguments = METHODS[config.name]
    method_class = getattr(importlib.import_module(f".{module}", __package__), name)
    return method_class(config, num_classes, accelerator, **arguments, **context)
