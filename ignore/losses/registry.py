"""The one place where method names are listed."""
import functools

from ..errors import SPMLError
from .an import AssumeNegative
from .an_ls import AssumeNegativeSmoothed
from .boostlu import BoostLU
from .em import EntropyMaximisation
from .epr import ExpectedPositiveRegulariser
from .full import FullLabels
from .ignore import Ignore
from .large_loss import LargeLoss
from .role import LabelEstimates
from .wan import WeightedAssumeNegative

METHODS = {
    "an": AssumeNegative,
    "full": FullLabels,
    "ignore": Ignore,
    # IGNORE's controls: its losses and step, another rejected set (rejection.py)
    "never_reject": functools.partial(Ignore, rejection="never"),
    "random_reject": functools.partial(Ignore, rejection="random"),
    "oracle_reject": functools.partial(Ignore, rejection="oracle"),  # reads the clean labels
    # the baselines of SPEC section 3
    "an_ls": AssumeNegativeSmoothed,
    "wan": WeightedAssumeNegative,
    "epr": ExpectedPositiveRegulariser,
    "role": LabelEstimates,
    "em": EntropyMaximisation,
    "em_apl": functools.partial(EntropyMaximisation, pseudo_labels=True),
    "ll_r": functools.partial(LargeLoss, correction="reject"),
    "ll_ct": functools.partial(LargeLoss, correction="temporary"),
    "ll_cp": functools.partial(LargeLoss, correction="permanent"),
    "boostlu": BoostLU,  # on method.boostlu_base
}


def build_method(config, num_classes, accelerator, **context):
    """context: seed, normalisation, num_train_rows, positives_per_image, lr, epochs (see Method)."""
    if config.name not in METHODS:
        raise SPMLError(f"method.name '{config.name}' is not one of {sorted(METHODS)}")
    return METHODS[config.name](config, num_classes, accelerator, **context)
