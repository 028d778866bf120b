"""Typed configuration: dataclass defaults, then a YAML file, then dotted overrides.

Device count and gradient accumulation are NOT here: they belong to the Accelerate launch
config. Precision is `train.mixed_precision` ("auto": the launcher's, else bf16 on a GPU).
Every key below is read somewhere; unknown keys are rejected.
"""
import dataclasses
import math
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import SPMLError
from .files import write_text_atomic


def setting(default, meaning):
    """A config key: its default and its meaning, the one place `ignore-train --help` reads both from."""
    return field(default=default, metadata={"help": meaning})


@dataclass
class DataConfig:
    path: str = setting("", "a dataset in our format (docs/datasets.md); empty = the built-in demo dataset")
    image_root: str = setting("", "overrides the image root stored in the dataset")
    image_size: int = setting(64, "square side of the training and evaluation images (paper: 448)")
    num_workers: int = setting(2, "DataLoader worker processes per process (persistent)")
    bad_images: str = setting("error", "an unreadable training image: 'error' stops the run; 'skip' logs it, leaves "
                                       "it out of its batch and counts it in metrics.json")
    demo: str = setting("dense", "the built-in dataset when data.path is empty: dense (10 digit classes, 1-4 a "
                                 "canvas, 17% of the unannotated labels false negatives) or sparse (shaped like VOC: "
                                 "20 classes, 1.5 a canvas, 2.6%)")
    demo_seed: int = setting(0, "seed of the built-in demo dataset")
    train_subset: int = setting(0, "train on the first N rows only (0 = all): quick checks")
    image_column: str = setting("", "bring your own HuggingFace dataset: its image column (docs/datasets.md)")
    label_column: str = setting("", "bring your own HuggingFace dataset: its multi-label column")
    train_shards: str = setting("", "stream the train split from this folder of Parquet shards, written from the "
                                    "dataset by data_scripts/write_shards.py: each process reads its own shards; val "
                                    "and test still come from the dataset (docs/datasets.md#streaming-shards)")


@dataclass
class ModelConfig:
    name: str = setting("cam", "cam: 1x1-conv CAM head; q2l: Query2Label transformer head (the q2l_ keys)")
    backbone: str = setting("small_cnn", "a torchvision trunk, or small_cnn (5 conv layers, stride 8: learns the demo "
                                         "from scratch on a CPU)")
    pretrained: str = setting("", "'' | imagenet (torchvision's IMAGENET1K_V1) | another torchvision weights name "
                                  "(IMAGENET1K_V2, DEFAULT) | a local state-dict file, .pth or .safetensors")
    output_stride: int = setting(32, "16 dilates the last stage (resnet50, mobilenet_v2): a CAM twice as fine")
    head_lr_multiplier: float = setting(10.0, "the learning rate of head_parameters() (all but the trunk: the 1x1 "
                                              "CAM head, or q2l's transformer) relative to the trunk (SPEC 2.9)")
    channels_last: bool = setting(True, "NHWC weights and inputs: faster convolutions on GPUs and oneDNN CPUs")
    sync_batchnorm: bool = setting(True, "BatchNorm statistics over every process's batch, so N processes normalise "
                                         "as one does (torch's SyncBatchNorm on GPUs, ours on CPUs); false: per "
                                         "process, one all-reduce a layer fewer")
    # Query2Label's sizes (model.name=q2l); the defaults are the authors'
    q2l_hidden_dim: int = setting(2048, "q2l: width of the projection, the transformer and the label queries")
    q2l_heads: int = setting(4, "q2l: attention heads; the CAM averages their cross-attention maps")
    q2l_encoder_layers: int = setting(1, "q2l: self-attention layers over the feature cells")
    q2l_decoder_layers: int = setting(2, "q2l: label-query layers; the last one's cross-attention makes the CAM")
    q2l_ffn_dim: int = setting(8192, "q2l: hidden width of each layer's feed-forward block")
    q2l_dropout: float = setting(0.1, "q2l: dropout on attention weights, residual branches and feed-forward blocks")


@dataclass
class MethodConfig:
    name: str = setting("ignore", "IGNORE, its controls (never_reject, random_reject, oracle_reject), the "
                                  "baselines, or full (clean labels, the upper bound)")
    warm_up: int = setting(3, "epochs before IGNORE rejects anything")
    # calibrated: measured against ema on two datasets in two regimes (docs/results.md)
    rule: str = setting("calibrated", "IGNORE's rejection rule: calibrated = a false-negative probability from the "
                                      "drop, the weak logit and the CAM peak outside the kept region, fitted each epoch on the validation split's clean "
                                      "labels; ema = the paper's, a drop above the EMA gap threshold (and LAT)")
    reject_probability: float = setting(0.5, "rule=calibrated: reject an unannotated label whose fitted "
                                             "false-negative probability exceeds this")
    # 0.5 and the signed drop: measured against the paper's 0.8 and |gap| (docs/results.md)
    cam_threshold: float = setting(0.5, "the masked image keeps the pixels whose normalised CAM exceeds this "
                                        "(paper: 0.8)")
    cam_normalisation: str = setting("image", "'image': min-max over each map's own pixels; 'authors': the "
                                              "authors' rule across the batch (SPEC 2, defect 1)")
    mask_fill: str = setting("mean", "what replaces the removed pixels: 'mean' (0 after normalisation, the "
                                     "authors') | 'black'")
    gap_lambda: float = setting(0.999, "EMA decay of the gap threshold (starts at 0)")
    avg_lambda: float = setting(0.999, "EMA decay of the per-class average-logit threshold (starts at 0)")
    threshold_bias_correction: bool = setting(False, "divide both EMA thresholds by 1 - decay^updates "
                                                     "(they start at 0)")
    lat: bool = setting(True, "also require the weak logit to exceed its class's average logit (LAT)")
    gap: str = setting("drop", "'drop': z_weak - z_masked, a rise never flags a label; 'absolute': "
                               "|z_weak - z_masked| (the paper)")
    weight_spbc: float = setting(0.1, "weight of the single-positive BCE on the weak logits")
    weight_ign: float = setting(1.0, "weight of the assume-negative BCE on the strong logits, rejected entries "
                                     "excluded")
    weight_reg: float = setting(0.5, "weight of the MSE between strong and weak logits")
    # The paper trains L_ign on a RandAugment view. Within the demo's 8 epochs that view costs
    # most of IGNORE's gain (docs/results.md), so the demo default is off; the paper recipe turns it on.
    strong_view: bool = setting(False, "on (paper): L_ign and L_reg use a RandAugment view; off: the weak logits "
                                       "stand in for the strong ones and L_reg is 0")
    masked_batchnorm: str = setting("batch", "BatchNorm in the masked pass: 'batch' = its own batch statistics, "
                                             "running ones untouched; 'eval' = running statistics")
    batched_views: bool = setting(False, "weak and strong views in ONE forward: fewer launches, BatchNorm "
                                         "statistics shared by both views")
    # The baselines (SPEC 3), their authors' defaults (VOC values where they differ by dataset)
    ls_epsilon: float = setting(0.1, "an_ls: targets 1 - eps for positives and eps for assumed negatives (Cole et al.)")
    epr_expected_positives: float = setting(0.0, "epr, role: k, the expected positives per image; 0 = the clean "
                                                 "training labels' mean, as Cole et al.")
    role_lr_multiplier: float = setting(10.0, "role: the label estimates' Adam learning rate over the backbone's")
    em_alpha: float = setting(0.2, "em, em_apl, vlpl: weight of the entropy of the unannotated labels "
                                   "(0.1 COCO, NUS; 0.01 CUB)")
    apl_beta: float = setting(0.02, "em_apl: weight of the pseudo-negative loss (0.9 COCO, 0.2 NUS, 0.4 CUB)")
    apl_negative_share: float = setting(0.9, "em_apl: share of each class's unannotated labels pseudo-labelled "
                                             "negative by the end")
    ll_delta_rel: float = setting(0.2, "ll_*, boostlu: the percent of entries rejected/corrected grows this much "
                                       "per epoch")
    boostlu_alpha: float = setting(5.0, "boostlu: positive CAM values are multiplied by this, in training and at "
                                        "inference")
    boostlu_base: str = setting("ll_r", "boostlu: the Large Loss variant it trains with")
    # GR-Loss (Chen et al., IJCAI 2024), its authors' defaults: K(p) = sigmoid(w p + b), V(p) a Gaussian of
    # mean mu and std sigma, each moving linearly from its start to its end value over train.epochs
    gr_k_slope_start: float = setting(0.0, "gr_loss: w of K(p) = sigmoid(w p + b), the chance that an unannotated "
                                           "label is a positive, in the first epoch")
    gr_k_slope_end: float = setting(2.0, "gr_loss: where w moves toward (it reaches start + (end - start) (T - 1) / T "
                                         "in the last of T epochs, as the authors')")
    gr_k_bias_start: float = setting(-2.0, "gr_loss: b of K(p) in the first epoch")
    gr_k_bias_end: float = setting(-2.0, "gr_loss: where b moves toward, as w")
    gr_v_mean_start: float = setting(0.5, "gr_loss: the mean mu of the weight V(p) = exp(-(p - mu)^2 / 2 sigma^2) "
                                          "starts here (the first epoch already takes one step of T)")
    gr_v_mean_end: float = setting(0.8, "gr_loss: mu in the last epoch")
    gr_v_std_start: float = setting(2.0, "gr_loss: the std sigma of V(p) starts here, as mu")
    gr_v_std_end: float = setting(0.5, "gr_loss: sigma in the last epoch")
    gr_q_positive: float = setting(0.01, "gr_loss: q of an unannotated label's positive-side loss (1 - p^q) / q "
                                         "(q -> 0: -log p)")
    gr_q_negative: float = setting(1.0, "gr_loss: q of its negative-side loss (1 - (1 - p)^q) / q (1: p itself)")
    # A frozen teacher's per-image class scores (teacher.py) and the method that reads them, VLPL's defaults
    teacher: str = setting("", "vlpl: the frozen teacher that scores every training image once: noisy_oracle, "
                               "imagenet_mobilenet_v2, or module:attribute of your own (docs/methods.md)")
    teacher_noise: float = setting(0.5, "teacher=noisy_oracle: its scores are the clean labels plus uniform noise "
                                        "in [-noise, noise], clipped to [0, 1]")
    teacher_class_map: str = setting("", "teacher=imagenet_mobilenet_v2: a JSON file {class name: [ImageNet class "
                                         "indices]}; a class scores the probability of its indices")
    teacher_threshold: float = setting(0.3, "vlpl: an unannotated label whose teacher score exceeds this is a "
                                            "pseudo-positive (VLPL: 0.3)")
    vlpl_beta: float = setting(0.7, "vlpl: weight of the pseudo-positives' loss (VLPL: 0.7)")


@dataclass
class OptimConfig:
    optimizer: str = setting("adam", "the optimiser (torch.optim's Adam or AdamW)")
    lr: float = setting(1e-3, "trunk learning rate at reference_batch_size")
    reference_batch_size: int = setting(16, "the learning rate is scaled linearly to the global batch size "
                                            "(batch x processes x accumulation)")
    weight_decay: float = setting(0.0, "weight decay of the optimiser")
    scheduler: str = setting("none", "the learning-rate schedule: onecycle = max_lr lr, pct_start 0.2, stepped every "
                                     "optimiser step")


@dataclass
class TrainConfig:
    epochs: int = setting(8, "training epochs")
    batch_size: int = setting(32, "images per process and step")
    seed: int = setting(0, "seed of the shuffle order, the views and the initial weights")
    output_dir: str = setting("runs/demo", "the run folder: config, logs, checkpoints, export, metrics, report")
    resume: str = setting("", "'' = a fresh run, 'auto' = the newest intact checkpoint in output_dir, or a "
                              "checkpoint directory")
    overwrite: bool = setting(False, "a fresh run into an output_dir that holds another run's checkpoints, export or "
                                     "metrics.json deletes that run's outputs first (false: it stops)")
    row_state_dir: str = setting("", "'' = the per-image tables of role, ll_cp and em_apl in every process's memory; a "
                                     "folder (/dev/shm, a local disk) = in files there, one copy a machine that its "
                                     "processes share (docs/distributed.md)")
    checkpoint_every_steps: int = setting(0, "also checkpoint every N optimiser steps (0 = after each epoch only)")
    keep_checkpoints: int = setting(2, "newest checkpoints kept")
    mixed_precision: str = setting("auto", "auto: the launcher's --mixed_precision, else bf16 on a GPU, fp32 on a "
                                           "CPU; no: fp32; bf16 or fp16: over the launcher's")
    log_every: int = setting(10, "steps between scalar logs (the only host-device syncs of the step)")
    max_steps: int = setting(0, "stop after this many optimiser steps in all (0 = no limit): tests and smoke runs")
    tracker: str = setting("tensorboard", "where the scalars and the config go: tensorboard, none, or another "
                                          "tracker Accelerate supports (its package must be installed)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key; NaN fails every comparison, so it is always refused."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # True: low itself is refused
    high_open: bool = False

    def __contains__(self, value):
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < self.high if self.high_open else value <= self.high
        return low_ok and high_ok

    def __str__(self):
        if self.low == -math.inf and self.high == math.inf:
            return "any finite number"
        low = f"{'>' if self.low_open else '>='} {self.low}"
        high = f"{'<' if self.high_open else '<='} {self.high}"
        return low if self.high == math.inf else f"{low} and {high}"


def any_number():
    return Range()


def at_least(low):
    return Range(low)


def above(low):
    return Range(low, low_open=True)


def between(low, high, low_open=False, high_open=False):
    return Range(low, high, low_open=low_open, high_open=high_open)


# The valid values of every int and float key, one line each; a test checks that none is missing.
RANGES = {
    "data.image_size": at_least(8),  # the smallest backbone (small_cnn) has stride 8
    "data.num_workers": at_least(0),
    "data.demo_seed": at_least(0),
    "data.train_subset": at_least(0),
    "model.head_lr_multiplier": above(0),
    "model.output_stride": between(16, 32),  # 16 or 32: the backbone says which it supports
    "model.q2l_hidden_dim": at_least(4),  # also a multiple of 4 and of q2l_heads (checked by the model)
    "model.q2l_heads": at_least(1),
    "model.q2l_encoder_layers": at_least(0),  # 0: the decoder reads the projected features directly
    "model.q2l_decoder_layers": at_least(1),  # the CAM needs a last decoder layer
    "model.q2l_ffn_dim": at_least(1),
    "model.q2l_dropout": between(0, 1, high_open=True),
    "method.warm_up": at_least(0),
    "method.reject_probability": between(0, 1, low_open=True, high_open=True),
    "method.cam_threshold": between(0, 1, high_open=True),  # 1 or more would mask every pixel
    "method.gap_lambda": between(0, 1, high_open=True),  # 1 would keep the threshold at 0 for ever
    "method.avg_lambda": between(0, 1, high_open=True),
    "method.weight_spbc": at_least(0),
    "method.weight_ign": at_least(0),
    "method.weight_reg": at_least(0),
    "method.ls_epsilon": between(0, 0.5, high_open=True),  # 0.5 would make every target 0.5
    "method.epr_expected_positives": at_least(0),
    "method.role_lr_multiplier": above(0),
    "method.em_alpha": at_least(0),
    "method.apl_beta": at_least(0),
    "method.apl_negative_share": between(0, 1),
    "method.ll_delta_rel": between(0, 100),
    "method.boostlu_alpha": above(0),
    "method.gr_k_slope_start": any_number(),
    "method.gr_k_slope_end": any_number(),
    "method.gr_k_bias_start": any_number(),
    "method.gr_k_bias_end": any_number(),
    "method.gr_v_mean_start": any_number(),  # a mean outside [0, 1] is a weight that rises or falls monotonically
    "method.gr_v_mean_end": any_number(),
    "method.gr_v_std_start": above(0),
    "method.gr_v_std_end": above(0),
    "method.gr_q_positive": between(0, 1, low_open=True),  # q = 0 divides by 0 (its limit is -log p)
    "method.gr_q_negative": between(0, 1, low_open=True),
    "method.teacher_noise": between(0, 1),
    "method.teacher_threshold": between(0, 1, high_open=True),  # scores are in [0, 1]: 1 would flag nothing
    "method.vlpl_beta": at_least(0),
    "optim.lr": above(0),
    "optim.reference_batch_size": at_least(1),
    "optim.weight_decay": at_least(0),
    "train.epochs": at_least(1),
    "train.batch_size": at_least(1),
    "train.seed": between(0, 2**32 - 1),  # numpy's seed range
    "train.checkpoint_every_steps": at_least(0),
    "train.keep_checkpoints": at_least(1),
    "train.log_every": at_least(1),
    "train.max_steps": at_least(0),
}


def valid_keys(config=None, prefix=""):
    """Every dotted key of the config, e.g. 'method.warm_up'."""
    config = config if config is not None else Config()
    keys = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, f"{prefix}{item.name}.")
        else:
            keys.append(prefix + item.name)
    return keys


def _coerce(key, value, kind):
    """A YAML or command-line value as the field's type; a clear error otherwise."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool and text in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            value = text in ("true", "yes", "on", "1")
        elif kind in (int, float):
            try:
                value = kind(text)  # also "1e-5", which YAML 1.1 leaves a string
            except ValueError:
                pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise SPMLError(f"config key '{key}' expects {kind.__name__}, got {value!r}")
    if kind in (int, float):
        if value not in RANGES[key]:
            raise SPMLError(f"config key '{key}' must be {RANGES[key]}, got {value!r}")
        if not math.isfinite(value):
            raise SPMLError(f"config key '{key}' must be finite, got {value!r}")
    return value


def _set(config, key, value, choices):
    section_name, _, name = key.partition(".")
    if key not in valid_keys():
        raise SPMLError(f"unknown config key '{key}'; valid keys: {', '.join(valid_keys())}")
    section = getattr(config, section_name)
    kinds = typing.get_type_hints(type(section))
    value = _coerce(key, value, kinds[name])
    if key in choices and value not in choices[key]:
        raise SPMLError(f"config key '{key}' must be one of {' | '.join(choices[key])}, got {value!r}")
    setattr(section, name, value)


def flatten(tree, prefix=""):
    """(dotted key, value) pairs of a tree of sections, e.g. ('method.warm_up', 3)."""
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{name}.")
        else:
            yield prefix + str(name), value


RECIPES = Path(__file__).with_name("configs")  # the paper and demo recipes shipped with the package


def recipes():
    """The shipped recipes' names, e.g. 'ignore_resnet50_paper'."""
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def config_path(name):
    """A YAML file: the path itself when it exists, else the shipped recipe of that name (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    recipe = RECIPES / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and recipe.is_file():
        return recipe
    raise SPMLError(f"{path}: config file not found, nor a shipped recipe ({', '.join(recipes())})")


def load_config(config_file=None, overrides=(), choices=None):
    """Defaults <- YAML file (a path or a shipped recipe's name) <- `key=value` overrides (dotted keys).

    choices: {dotted key: allowed values} of the string settings with a fixed set, from the
    registries that build them (`ignore.train.setting_choices`); a value outside them stops here.
    """
    config, choices = Config(), choices or {}
    if config_file:
        path = config_path(config_file)
        for key, value in flatten(read_settings_file(path)):
            _set(config, key, value, choices)
    given = {}
    for override in overrides:
        key, equals, value = override.partition("=")
        if not equals:
            raise SPMLError(f"override '{override}' is not of the form key=value")
        key = key.strip()
        if key in given:
            raise SPMLError(f"'{key}' is given twice on the command line ({given[key]} and {override}): give it once")
        given[key] = override
        _set(config, key, value, choices)
    return config


def read_settings_file(path):
    """The YAML file's tree of sections; a section or key given twice stops (PyYAML would keep the last)."""
    try:
        text = path.read_text(encoding="utf-8")
        duplicate = first_duplicate(yaml.compose(text, Loader=yaml.SafeLoader))
        tree = yaml.safe_load(text) or {}
    except UnicodeDecodeError as error:
        raise SPMLError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise SPMLError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if duplicate:
        key, first_line, line = duplicate
        raise SPMLError(f"{path}: '{key}' is given twice (lines {first_line} and {line}): give it once")
    if not isinstance(tree, dict):
        raise SPMLError(f"{path}: expected a mapping of sections at the top")
    return tree


def first_duplicate(node, prefix=""):
    """(dotted key, its first line, its second line) of the first key given twice in a composed YAML node, or None."""
    if not isinstance(node, yaml.MappingNode):
        return None
    lines = {}
    for key_node, value_node in node.value:
        key, line = f"{prefix}{key_node.value}", key_node.start_mark.line + 1
        if key in lines:
            return key, lines[key], line
        lines[key] = line
        found = first_duplicate(value_node, f"{key}.")
        if found:
            return found
    return None


def merged_overrides(*groups):
    """`key=value` overrides of several sources as one list, a later source's key replacing an earlier's:
    a key may be given once only to load_config."""
    merged = {}
    for override in (item for group in groups for item in group):
        merged[override.partition("=")[0].strip()] = override
    return list(merged.values())


def save_config(config, path):
    """The merged config as YAML, written atomically."""
    write_text_atomic(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def scaled_lr(optim, global_batch_size):
    """The one place the learning rate follows the batch: linear in the global batch size."""
    return optim.lr * global_batch_size / optim.reference_batch_size


def config_help(choices=None):
    """Every key with its type, default, range or allowed values, and meaning: the epilog of `ignore-train --help`."""
    choices = choices or {}
    lines = ["settings (key=value, or in the --config YAML file as section: {key: value}):"]
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.default_factory()):
            key = f"{section.name}.{item.name}"
            kind = typing.get_type_hints(section.type)[item.name].__name__
            limits = f", range {RANGES[key]}" if key in RANGES else ""
            limits += f", one of {' | '.join(choices[key])}" if key in choices else ""
            lines.append(f"  {key} ({kind}, default {item.default!r}{limits})")
            lines += textwrap.wrap(item.metadata["help"], 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def flattened(config):
    """{dotted key: value} of the merged config: the hyperparameters a tracker records."""
    return dict(flatten(dataclasses.asdict(config)))
