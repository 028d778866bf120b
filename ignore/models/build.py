"""The one place a classifier is built from the model settings, so that training, inference
and the export agree on what a model is."""
import dataclasses

from ..config import ModelConfig
from ..errors import SPMLError
from .cam_model import CAMClassifier
from .query2label import Query2Label
from .registry import MODELS


def build_model(model_config, num_classes):
    """The classifier that `model_config` (a ModelConfig) describes, with C outputs."""
    trunk = (model_config.backbone, num_classes, model_config.pretrained, model_config.channels_last,
             model_config.output_stride)
    if model_config.name == "cam":
        return CAMClassifier(*trunk)
    if model_config.name == "q2l":
        return Query2Label(*trunk, hidden_dim=model_config.q2l_hidden_dim, heads=model_config.q2l_heads,
                           encoder_layers=model_config.q2l_encoder_layers,
                           decoder_layers=model_config.q2l_decoder_layers, ffn_dim=model_config.q2l_ffn_dim,
                           dropout=model_config.q2l_dropout)
    raise SPMLError(f"model.name '{model_config.name}' is not one of {MODELS}")


def model_settings(model_config):
    """The model section for an export: everything but where the initial weights came from."""
    settings = dataclasses.asdict(model_config)
    settings["pretrained"] = ""  # the export holds the trained weights
    return settings


def model_config_from_export(info):
    """A ModelConfig from an export's config.json ("model" section; older exports: top-level keys)."""
    if "model" in info:
        known = {item.name for item in dataclasses.fields(ModelConfig)}
        return ModelConfig(**{key: value for key, value in info["model"].items() if key in known})
    return ModelConfig(backbone=info["backbone"], output_stride=info.get("output_stride", 32))
