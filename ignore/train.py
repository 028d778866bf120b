"""Train a single-positive multi-label classifier.

    ignore-train [--config FILE.yaml | NAME] [key=value ...]       # python -m ignore.train, python train.py
    accelerate launch -m ignore.train [--config ...] [key=value ...]

Without arguments: IGNORE on the built-in demo data, into runs/demo. --config takes a YAML
file or the name of a shipped recipe (see --help). The config is checked before anything
heavy is imported or any folder is made.
"""
import argparse
import sys

from .config import config_help, load_config
from .data import registry as data_registry
from .errors import exit_on_error
from .losses import registry as method_registry
from .models import registry as model_registry
from .training import registry as training_registry


def setting_choices():
    """{key: allowed values} of every string setting with a fixed set, each from the registry that builds it."""
    return {**data_registry.CHOICES, **model_registry.CHOICES, **method_registry.CHOICES, **training_registry.CHOICES}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="ignore-train", description=__doc__, epilog=config_help(setting_choices()),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a YAML file of settings, or a shipped recipe's name")
    parser.add_argument("overrides", nargs="*", help="dotted settings, e.g. method.warm_up=2 train.epochs=5")
    return parser.parse_intermixed_args(argv)  # --config before, between or after the overrides


@exit_on_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    config = load_config(args.config, args.overrides, setting_choices())
    from .training.run import train  # torch and the rest only once the config is known to be good

    train(config, argv)


if __name__ == "__main__":
    main()
