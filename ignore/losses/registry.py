"""The one place where method names are listed."""
import functools

from ..errors import SPMLError
from .an import AssumeNegative
from .full import FullLabels
from .ignore import Ignore

METHODS = {
    "an": AssumeNegative,
    "full": FullLabels,
    "ignore": Ignore,
    # IGNORE's controls: its losses and step, another rejected set (rejection.py)
    "never_reject": functools.partial(Ignore, rejection="never"),
    "random_reject": functools.partial(Ignore, rejection="random"),
    "oracle_reject": functools.partial(Ignore, rejection="oracle"),  # reads the clean labels
}


def build_method(config, num_classes, accelerator, **context):
    """context: seed, normalisation (see Method)."""
    if config.name not in METHODS:
        raise SPMLError(f"method.name '{config.name}' is not one of {sorted(METHODS)}")
    return METHODS[config.name](config, num_classes, accelerator, **context)
