"""The export: the Hub mixin's layout, torchvision's names, older exports, the card, the upload."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from huggingface_hub import HfApi, PyTorchModelHubMixin
from safetensors.torch import load_file, save_file
from torch import nn

from ignore.errors import SPMLError
from ignore.export import main
from ignore.models.export import SPMLClassifier, add_test_metrics, load_export, write_export
from ignore.models.cam_model import CAMClassifier

REPO = Path(__file__).resolve().parents[1]


def info_for(backbone, **extra):
    return {"class_names": ["cat", "dog", "car"], "model": {"backbone": backbone, "channels_last": False},
            "image_size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "method": "ignore",
            "source": "test", "epoch": 1, "val_mAP": 55.5, **extra}


def trained(backbone):
    """A network with weights and BatchNorm statistics that differ from a fresh one."""
    torch.manual_seed(0)
    network = CAMClassifier(backbone, 3)
    network.train()(torch.randn(4, 3, 32, 32))  # moves the running statistics
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return network.eval()


def test_export_loads_through_the_hub_mixin_in_a_fresh_process(tmp_path):
    network = trained("small_cnn")
    write_export(tmp_path / "export", network, info_for("small_cnn"))
    assert sorted(path.name for path in (tmp_path / "export").iterdir()) == ["README.md", "config.json",
                                                                             "model.safetensors"]
    images = torch.randn(2, 3, 32, 32)
    torch.save(images, tmp_path / "images.pt")
    script = ("import sys, torch\n"
              "from huggingface_hub import PyTorchModelHubMixin\n"
              "from ignore.models.export import SPMLClassifier\n"
              "assert issubclass(SPMLClassifier, PyTorchModelHubMixin)\n"
              "model = SPMLClassifier.from_pretrained(sys.argv[1])\n"
              "assert not model.training and model.class_names == ['cat', 'dog', 'car']\n"
              "torch.save(model(torch.load(sys.argv[2]))['logits'], sys.argv[3])\n")
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "export"), str(tmp_path / "images.pt"),
                             str(tmp_path / "logits.pt")], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), network(images)["logits"], atol=1e-6)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["export_version"] == 2 and config["model"]["backbone"] == "small_cnn"


@pytest.mark.parametrize("backbone, torchvision_prefix", [("resnet18", ""), ("mobilenet_v2", "")])
def test_trunk_weights_carry_torchvisions_names(tmp_path, backbone, torchvision_prefix):
    write_export(tmp_path / "export", CAMClassifier(backbone, 3), info_for(backbone))
    weights = load_file(str(tmp_path / "export" / "model.safetensors"))
    trunk = {key.removeprefix("trunk."): value for key, value in weights.items() if key.startswith("trunk.")}
    assert set(weights) - {f"trunk.{key}" for key in trunk} == {"head.weight", "head.bias"}
    reference = torchvision.models.get_model(backbone)
    missing, unexpected = reference.load_state_dict(trunk, strict=False)
    assert unexpected == [] and all(key.startswith(("fc.", "classifier.")) for key in missing)
    assert torch.equal(reference.state_dict()[next(iter(trunk))], next(iter(trunk.values())))


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18", "mobilenet_v2"])
def test_an_older_export_with_positional_names_and_a_top_level_backbone_still_loads(tmp_path, backbone):
    network = trained(backbone)
    # what the exports before version 2 held: the trunk as a plain Sequential (MobileNetV2: torchvision's
    # `features` itself), so `trunk.0.weight`, and the backbone as a top-level key
    old_trunk = network.trunk.features if backbone == "mobilenet_v2" else nn.Sequential(*network.trunk.children())
    old = {f"trunk.{key}": value for key, value in old_trunk.state_dict().items()}
    old.update({f"head.{key}": value for key, value in network.head.state_dict().items()})
    assert "trunk.0.weight" in old or "trunk.0.0.weight" in old
    export = tmp_path / "old"
    export.mkdir()
    save_file({key: value.contiguous() for key, value in old.items()}, str(export / "model.safetensors"))
    (export / "config.json").write_text(json.dumps({"class_names": ["cat", "dog", "car"], "backbone": backbone,
                                                    "image_size": 32, "mean": [0.5] * 3, "std": [0.2] * 3}))
    model = load_export(export)
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(images)["logits"], network(images)["logits"], atol=1e-6)


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path):
    write_export(tmp_path / "export", CAMClassifier("small_cnn", 3), info_for("small_cnn"))
    config = tmp_path / "export" / "config.json"
    config.write_text(config.read_text().replace('"backbone": "small_cnn"', '"backbone": "resnet18"'))
    with pytest.raises(SPMLError, match=r"model.safetensors: the weights do not fit the model that config.json "
                                        r"describes \(missing \['trunk.layer1.0.bn1.bias', .*unexpected \['trunk.bn2.bias', .*"
                                        r"other shapes \['head.weight', 'trunk.bn1.bias', 'trunk.bn1.running_mean'\]\)$"):
        load_export(tmp_path / "export")
    with pytest.raises(SPMLError, match=r"^/nonexistent/export: export directory not found$"):
        load_export("/nonexistent/export")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SPMLError, match=r"empty/config.json: not found \(an export holds model.safetensors"):
        load_export(tmp_path / "empty")


def test_the_card_names_the_metrics_and_the_upload_sends_exactly_the_export(tmp_path, monkeypatch, capsys):
    training = {"command": "python train.py method.warm_up=1", "num_processes": 1, "config": {"train": {"epochs": 2}}}
    write_export(tmp_path / "export", CAMClassifier("small_cnn", 3), info_for("small_cnn", training=training))
    add_test_metrics(tmp_path / "export", {"mAP": 61.234, "CF1": 40.5, "OF1": 42.25, "per_class_AP": [70.0, 60.0, 53.7],
                                           "classes_without_positive": 0})
    card = (tmp_path / "export" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: ignore-spml\n")
    assert "| test | 61.23 | 40.50 | 42.25 |" in card and "| car | 0.5000 | 53.70 |" in card  # no thresholds: 0.5
    assert "python train.py method.warm_up=1" in card and "val mAP 55.50" in card
    assert json.loads((tmp_path / "export" / "config.json").read_text())["test"]["mAP"] == 61.234

    uploaded = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        uploaded["private"] = private
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        uploaded["repo_id"] = repo_id
        uploaded["files"] = {path.name: path.read_bytes() for path in Path(folder_path).iterdir()}
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    main(["--model", str(tmp_path / "export"), "--push-to-hub", "someone/spml-demo", "--private"])
    assert uploaded["repo_id"] == "someone/spml-demo" and uploaded["private"] is True
    assert uploaded["files"] == {path.name: path.read_bytes() for path in (tmp_path / "export").iterdir()}
    assert "uploaded" in capsys.readouterr().out
    assert issubclass(SPMLClassifier, PyTorchModelHubMixin)


def test_an_export_is_swapped_with_one_whole_export_there_at_every_moment(tmp_path, monkeypatch):
    target, aside = tmp_path / "export", tmp_path / "export.replaced"
    write_export(target, trained("small_cnn"), info_for("small_cnn", epoch=1))
    renames, real_replace = [], os.replace

    def replace_and_look(source, destination):
        whole = [folder.name for folder in (target, aside) if (folder / "model.safetensors").is_file()]
        assert whole, f"no whole export before renaming {source} to {destination}"
        renames.append((Path(source).name, Path(destination).name))
        real_replace(source, destination)

    monkeypatch.setattr("ignore.models.export.os.replace", replace_and_look)
    write_export(target, CAMClassifier("small_cnn", 3), info_for("small_cnn", epoch=2))
    assert renames == [("export", "export.replaced"), ("export.partial", "export")]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
    assert load_export(target).export_info["epoch"] == 2


def test_a_swap_killed_half_way_is_settled_at_the_next_load_or_write(tmp_path):
    target, aside = tmp_path / "export", tmp_path / "export.replaced"
    network = trained("small_cnn")
    write_export(target, network, info_for("small_cnn", epoch=1))
    os.replace(target, aside)  # killed between the two renames: only the old export, aside
    model = load_export(target)
    assert model.export_info["epoch"] == 1 and not aside.exists()
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(images)["logits"], network(images)["logits"], atol=1e-6)

    shutil.copytree(target, aside)  # killed after the second rename: an old export left aside of the new one
    write_export(target, network, info_for("small_cnn", epoch=3))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
    assert load_export(target).export_info["epoch"] == 3


def test_the_decision_thresholds_travel_in_the_export_and_an_export_without_them_falls_back_to_half(tmp_path):
    write_export(tmp_path / "new", trained("small_cnn"), info_for("small_cnn", decision_thresholds=[0.2, 0.05, 0.7]))
    assert load_export(tmp_path / "new").thresholds == [0.2, 0.05, 0.7]
    write_export(tmp_path / "old", trained("small_cnn"), info_for("small_cnn"))
    assert load_export(tmp_path / "old").thresholds == [0.5, 0.5, 0.5]
    config = tmp_path / "new" / "config.json"
    config.write_text(config.read_text().replace('"decision_thresholds": [', '"decision_thresholds": [0.1, '))
    with pytest.raises(SPMLError, match=r"^config.json: 4 decision_thresholds for 3 classes$"):
        load_export(tmp_path / "new").thresholds


def card_metadata(export):
    """The YAML front matter of an export's model card, parsed."""
    front_matter = (export / "README.md").read_text().split("---\n")[1]
    return yaml.safe_load(front_matter)


TESTED = {"mAP": 61.234, "CF1": 40.5, "OF1": 42.25, "CF1_val_thresholds": 55.125, "OF1_val_thresholds": 57.0,
          "per_class_AP": [70.0, 60.0, 53.7], "classes_without_positive": 0}


@pytest.mark.parametrize("backbone, pretrained, base_model", [
    ("resnet18", "imagenet", "timm/resnet18.tv_in1k"),
    ("resnet18", "", None),
    ("mobilenet_v2", "DEFAULT", None),  # torchvision's MobileNetV2 weights have no copy on the Hub: text only
])
def test_the_cards_metadata_holds_the_results_and_the_base_model(tmp_path, backbone, pretrained, base_model):
    model = {"name": "cam", "backbone": backbone, "pretrained": "", "q2l_heads": 4, "q2l_dropout": 0.1}
    training = {"command": "ignore-train", "num_processes": 1, "config": {"model": {**model, "pretrained": pretrained}}}
    info = {**info_for(backbone, training=training, decision_thresholds=[0.25, 0.125, 0.5]), "model": model,
            "source": "voc2012"}
    write_export(tmp_path / "export", CAMClassifier(backbone, 3), info)
    add_test_metrics(tmp_path / "export", TESTED)
    metadata = card_metadata(tmp_path / "export")
    assert metadata.get("base_model") == base_model
    assert metadata["library_name"] == "ignore-spml" and metadata["pipeline_tag"] == "image-classification"
    (result,) = metadata["model-index"][0]["results"]
    assert result["dataset"] == {"name": "voc2012", "type": "voc2012", "split": "test"}
    metrics = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert metrics == {"mAP": 61.23, "CF1": 55.12, "OF1": 57.0}  # CF1, OF1 at the thresholds: what predict gives
    card = (tmp_path / "export" / "README.md").read_text()
    assert "q2l_" not in card  # a CAM model's card holds no Query2Label settings, in the text or the config
    assert "| dog | 0.1250 | 60.00 |" in card and "SPMLClassifier.from_export(" in card and "## Limitations" in card
    if pretrained:
        weights = "IMAGENET1K_V2" if pretrained == "DEFAULT" else "IMAGENET1K_V1"
        assert f"torchvision's ImageNet `{backbone}` weights `{weights}`" in card


def test_a_query2label_card_keeps_its_settings_and_an_untested_one_has_no_results(tmp_path):
    from ignore.config import ModelConfig
    from ignore.models.build import build_model, model_settings

    config = ModelConfig(name="q2l", q2l_hidden_dim=16, q2l_heads=2, q2l_ffn_dim=32)
    info = {**info_for("small_cnn"), "model": model_settings(config)}
    write_export(tmp_path / "export", build_model(config, 3), info)
    metadata = card_metadata(tmp_path / "export")
    assert "model-index" not in metadata and "base_model" not in metadata
    card = (tmp_path / "export" / "README.md").read_text()
    assert "`q2l_heads=2`" in card and "Not tested yet" in card
    assert "stores no decision thresholds" in card and "| cat | 0.5000 | - |" in card
