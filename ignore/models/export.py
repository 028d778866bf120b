"""The exported model: huggingface_hub's PyTorchModelHubMixin layout (uploaded by `python -m ignore.export`).

An export is a folder of three files, the layout `PyTorchModelHubMixin.save_pretrained` writes:
  model.safetensors  the network's weights under its own names: the trunk's are torchvision's
                     (`trunk.layer1.0.conv1.weight`; strip `trunk.` and they load into torchvision);
  config.json        what inference needs (`class_names`, the `model` section of the config that
                     `build_model` reads, `image_size`, `mean`, `std`, `decision_thresholds`: per class,
                     chosen on the validation split) and how it was trained (`method`, `source`, `epoch`,
                     `val_mAP`, `training`, and `test` once tested);
  README.md          the model card, generated from config.json alone.
`SPMLClassifier.from_export(folder or Hub repo)` rebuilds the network from config.json; its `predict(images)`
gives each image's labels at the decision thresholds and its probabilities.
"""
import json
import os
import re
import shutil
from pathlib import Path

from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import HFValidationError, HfHubHTTPError, LocalEntryNotFoundError
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import SPMLError
from ..files import whole_or_nothing, write_text_atomic
from .build import build_model, model_config_from_export
from .cam_boost import export_logits
from .model_card import model_card
from .predicting import decision_thresholds, labels_at, predict_probabilities

# 2: torchvision's layer names in the trunk and a model card; 1 (no key): positional trunk names
EXPORT_VERSION = 2
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
HUB_REPO = re.compile(r"[\w.-]+/[\w.-]+")  # USER/NAME, when no such local path exists


class SPMLClassifier(nn.Module, PyTorchModelHubMixin, library_name="ignore-spml", pipeline_tag="image-classification",
                     tags=["multi-label-classification", "single-positive-multi-label"]):
    """An exported classifier: predict(images) -> labels and probabilities; forward(images) -> {"logits": (B, C),
    ...}; `class_names`, `thresholds`.

    Load with `SPMLClassifier.from_export(path_or_repo)` (or the mixin's `from_pretrained`; eval mode, CPU unless
    told otherwise); `export_info` is the export's config.json.
    """

    def __init__(self, config: dict):
        super().__init__()
        self._adopt(build_model(model_config_from_export(config), len(config["class_names"])), config)

    @classmethod
    def wrapping(cls, network, config):
        """The trained `network` itself (not a copy) as an SPMLClassifier, to save it."""
        model = cls.__new__(cls, config)  # the mixin records `config` here, as cls(config) does
        nn.Module.__init__(model)
        model._adopt(network, config)
        return model

    def _adopt(self, network, config):
        self.network = network
        self.class_names = list(config["class_names"])
        self.export_info = config

    @classmethod
    def from_export(cls, where, device="cpu"):
        """The export in folder `where`, or in the Hub repository `where` (USER/NAME); one clear line otherwise."""
        return load_export(where, device)

    @property
    def thresholds(self):
        """Per class, the probability at or above which `predict` names it (chosen on the validation split)."""
        return decision_thresholds(self.export_info)

    def predict(self, images, threshold=None, batch_size=32):
        """Per image {"labels": [classes at or above their threshold, most probable first], "probabilities":
        {class: probability}}.

        images: PIL images (any mode) or image paths, or one of them; preprocessed as the run evaluated.
        threshold: one probability for every class instead of the per-class `thresholds`.
        """
        images = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
        thresholds = self.thresholds if threshold is None else [threshold] * len(self.class_names)
        predictions = []
        for start in range(0, len(images), batch_size):
            for row in predict_probabilities(self, images[start:start + batch_size]).tolist():
                predictions.append({"labels": [name for name, _ in labels_at(row, self.class_names, thresholds)],
                                    "probabilities": dict(zip(self.class_names, row))})
        return predictions

    def forward(self, images):
        """The network's output, with the logits it scores with (BoostLU's boosted CAM when trained so)."""
        output = self.network(images)
        return {**output, "logits": export_logits(output, self.export_info)}

    def _save_pretrained(self, save_directory):
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.network.state_dict().items()}
        save_file(state, str(Path(save_directory) / WEIGHTS))

    def generate_model_card(self, *args, **kwargs):
        return model_card(self.export_info)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         config=None, map_location="cpu", **unused):
        if config is None:
            raise SPMLError(f"{model_id}: no {CONFIG} (an export holds {WEIGHTS} and {CONFIG})")
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS
            if not weights.is_file():
                raise SPMLError(f"{weights}: not found (an export holds {WEIGHTS} and {CONFIG})")
        else:
            weights = hf_hub_download(model_id, WEIGHTS, revision=revision, cache_dir=cache_dir, token=token,
                                      force_download=force_download, local_files_only=local_files_only)
        model = cls(config)
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as error:
            raise SPMLError(f"{weights}: cannot read weights ({error})") from None
        if config.get("export_version", 1) < 2:
            state = renamed_from_positions(state, model.network)
        load_exactly(model.network, state, weights)
        return model.to(map_location).eval()


def renamed_from_positions(state, network):
    """Exports before version 2 named the trunk's layers by position: `trunk.4.0.conv1.weight` is
    `trunk.layer1.0.conv1.weight` now, `trunk.0.0.weight` of a MobileNetV2 `trunk.features.0.0.weight`."""
    trunk = getattr(network, "trunk", None)
    if trunk is None:
        return state
    names = [name for name, _ in trunk.named_children()]
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "trunk" and len(names) == 1:  # MobileNetV2: the trunk was torchvision's `features`
            parts.insert(1, names[0])
        elif parts[0] == "trunk" and parts[1].isdigit() and int(parts[1]) < len(names):
            parts[1] = names[int(parts[1])]
        renamed[".".join(parts)] = tensor
    return renamed


def load_exactly(network, state, where):
    """Every weight the network has, nothing else, each of its shape; one line naming the first misfits."""
    own = network.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = [key for key in own.keys() & state.keys() if own[key].shape != state[key].shape]
    if missing or unexpected or wrong:
        raise SPMLError(f"{where}: the weights do not fit the model that {CONFIG} describes (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}, other shapes {sorted(wrong)[:3]})")
    network.load_state_dict(state)


def load_export(where, device="cpu"):
    """An SPMLClassifier from an export folder or a Hub repository (USER/NAME); one clear line otherwise."""
    path = Path(where)
    settle_export(path)
    if not path.exists() and not HUB_REPO.fullmatch(str(where)):
        raise SPMLError(f"{where}: export directory not found")
    if path.is_dir() and not (path / CONFIG).is_file():
        raise SPMLError(f"{path / CONFIG}: not found (an export holds {WEIGHTS} and {CONFIG})")
    try:
        return SPMLClassifier.from_pretrained(str(where), map_location=str(device))
    except (HFValidationError, HfHubHTTPError, LocalEntryNotFoundError) as error:
        raise SPMLError(f"{where}: no such export directory, nor a Hub model ({str(error).splitlines()[0]})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SPMLError(f"{where}: {CONFIG} is not an export's ({type(error).__name__}: {error})") from None


def partial_of(target):
    """Where an export is written before it is renamed to `target`."""
    return target.with_name(target.name + ".partial")


def aside_of(target):
    """Where the export being replaced waits while the new one is renamed in."""
    return target.with_name(target.name + ".replaced")


def write_export(target, network, info):
    """`network` and `info` as an export folder at `target`, written whole under a temporary name and renamed.

    A folder cannot be renamed over another, so the old export is renamed aside first, then the new one in,
    then the old one deleted: at every moment one whole export is at `target` or aside (settle_export).
    """
    target = Path(target)
    partial, aside = partial_of(target), aside_of(target)
    settle_export(target)
    shutil.rmtree(partial, ignore_errors=True)
    with whole_or_nothing(target, partial):  # a full disk: the previous export stays
        SPMLClassifier.wrapping(network, {**info, "export_version": EXPORT_VERSION}).save_pretrained(partial)
    if target.exists():
        os.replace(target, aside)
    os.replace(partial, target)
    if aside.exists():
        shutil.rmtree(aside)


def settle_export(target):
    """Finish a swap that a killed run left half done: the old export aside and none at `target` (killed
    between the two renames) goes back; an old export aside of a new one (killed before deleting it) goes."""
    target, aside = Path(target), aside_of(Path(target))
    if aside.is_dir():
        if target.exists():
            shutil.rmtree(aside)
        else:
            os.replace(aside, target)


def read_info(export_dir):
    """An export folder's config.json."""
    return json.loads((Path(export_dir) / CONFIG).read_text())


def add_test_metrics(export_dir, metrics):
    """The test split's metrics into config.json and the model card (each file replaced atomically)."""
    export_dir = Path(export_dir)
    info = read_info(export_dir)
    info["test"] = {name: metrics[name] for name in ("mAP", "CF1", "OF1", "CF1_val_thresholds", "OF1_val_thresholds",
                                                     "per_class_AP", "classes_without_positive") if name in metrics}
    write_text_atomic(export_dir / CONFIG, json.dumps(info, sort_keys=True, indent=2))
    write_text_atomic(export_dir / CARD, str(model_card(info)))
