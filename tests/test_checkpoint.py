"""Export and checkpoint helpers on an in-process model (the trainer's runs are in test_train.py)."""
import torch
from accelerate import Accelerator

from ignore.training.checkpoint import export_model, network
from ignore.inference import load_export
from ignore.models.cam_model import CAMClassifier


def test_export_of_a_compiled_model_has_the_plain_weight_names(tmp_path):
    # what `accelerate launch --dynamo_backend inductor` trains: compiling is lazy, nothing runs here
    accelerator = Accelerator(cpu=True)
    model = CAMClassifier("small_cnn", 3)
    compiled = torch.compile(model)
    assert all(name.startswith("_orig_mod.") for name in compiled.state_dict())
    assert network(accelerator, compiled) is model

    info = {"class_names": ["a", "b", "c"], "model": {"backbone": "small_cnn"}, "image_size": 32,
            "mean": [0.5] * 3, "std": [0.25] * 3}
    export_model(accelerator, compiled, info, tmp_path)
    exported = load_export(tmp_path / "export").network.state_dict()
    assert exported.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(exported[name], tensor), name
