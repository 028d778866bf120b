"""The one place where method names are listed."""
from ..errors import SPMLError
from .an import AssumeNegative
from .full import FullLabels
from .ignore import Ignore

METHODS = {
    "an": AssumeNegative,
    "full": FullLabels,
    "ignore": Ignore,
}


def build_method(config, num_classes, accelerator):
    if config.name not in METHODS:
        raise SPMLError(f"method.name '{config.name}' is not one of {sorted(METHODS)}")
    return METHODS[config.name](config, num_classes, accelerator)
