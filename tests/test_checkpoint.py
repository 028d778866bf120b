"""Export and checkpoint helpers on an in-process model (the trainer's runs are in test_train.py)."""
import json

import torch
from accelerate import Accelerator

from ignore.training.checkpoint import Progress, adopt_best_export, export_model, network
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


def run_folder_with_export(root, exported_epoch):
    """A run folder as the trainer leaves it: a checkpoint, and the export of `exported_epoch` beside it."""
    (root / "checkpoints" / "step-000000006").mkdir(parents=True)
    (root / "export").mkdir()
    (root / "export" / "config.json").write_text(json.dumps({"epoch": exported_epoch}))
    (root / "export" / "model.safetensors").write_bytes(b"weights")
    return root / "checkpoints" / "step-000000006"


def test_a_checkpoint_resumed_into_another_folder_brings_its_best_export_or_chooses_the_best_again(tmp_path):
    accelerator, said = Accelerator(cpu=True), []
    checkpoint = run_folder_with_export(tmp_path / "source", exported_epoch=0)
    progress = Progress(best_epoch=0, best_val_map=41.5)
    adopt_best_export(accelerator, checkpoint, tmp_path / "here", progress, said.append)
    assert (tmp_path / "here" / "export" / "model.safetensors").read_bytes() == b"weights"
    assert (progress.best_epoch, progress.best_val_map) == (0, 41.5)
    assert said == [f"the best epoch so far (0): its export copied from {tmp_path / 'source' / 'export'}"]

    # the source run went on to export a later epoch: the best is chosen again, nothing is copied
    later = run_folder_with_export(tmp_path / "later", exported_epoch=1)
    progress, said = Progress(best_epoch=0, best_val_map=41.5), []
    adopt_best_export(accelerator, later, tmp_path / "elsewhere", progress, said.append)
    assert not (tmp_path / "elsewhere" / "export").exists()
    assert (progress.best_epoch, progress.best_val_map) == (-1, -1.0)
    assert said == [f"the best epoch so far (0, val mAP 41.50) has no export beside {later} any more; the best "
                    "epoch is chosen among the epochs from here"]

    # a checkpoint of its own folder: untouched, even with the export aside (a swap a kill left half done)
    (tmp_path / "source" / "export").rename(tmp_path / "source" / "export.aside")
    progress, said = Progress(best_epoch=0, best_val_map=41.5), []
    adopt_best_export(accelerator, checkpoint, tmp_path / "source", progress, said.append)
    assert said == [] and progress.best_epoch == 0
