"""Backbones: torchvision's pretrained weights through its own cache, output stride, errors.

`../shared/weights/` holds torchvision's ImageNet MobileNetV2 file byte for byte; each test
links it into a temporary TORCH_HOME, so torchvision finds it where a user's machine keeps
its downloads and nothing is fetched.
"""
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from ignore.errors import SPMLError
from ignore.models.cam_model import CAMClassifier

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenet_v2-b0353104.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A TORCH_HOME whose hub cache holds the MobileNetV2 ImageNet file."""
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} is not here (it ships beside the checkout, in shared/weights)")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / WEIGHTS.name).symlink_to(WEIGHTS)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)


def test_imagenet_loads_torchvisions_file_from_the_cache(torch_home, no_network):
    model = CAMClassifier("mobilenet_v2", num_classes=3, pretrained="imagenet")
    reference = torch.load(WEIGHTS, weights_only=True)
    trunk = model.trunk.state_dict()
    assert len(trunk) == len([key for key in reference if key.startswith("features.")])
    for key, value in trunk.items():  # torchvision's own names
        assert torch.equal(value, reference[key]), key
    assert model.normalisation == {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_a_local_file_still_works_and_a_weights_name_is_looked_up(torch_home, no_network, tmp_path):
    local = CAMClassifier("mobilenet_v2", num_classes=3, pretrained=str(WEIGHTS))
    by_name = CAMClassifier("mobilenet_v2", num_classes=3, pretrained="IMAGENET1K_V1")
    assert torch.equal(local.trunk.features[0][0].weight, by_name.trunk.features[0][0].weight)


def test_absent_file_without_network_is_one_clear_error(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(SPMLError, match=r"mobilenet_v2 IMAGENET1K_V1 weights are not in .*mobilenet_v2-b0353104\.pth "
                                        r"and could not be downloaded .*no network in this test") as error:
        CAMClassifier("mobilenet_v2", num_classes=3, pretrained="imagenet")
    assert "\n" not in str(error.value)


def test_a_value_that_is_neither_file_nor_weights_name_is_a_clear_error():
    with pytest.raises(SPMLError, match="model.pretrained: nowhere.pth is neither a file nor a torchvision weights name"):
        CAMClassifier("resnet18", num_classes=3, pretrained="nowhere.pth")
    with pytest.raises(SPMLError, match="small_cnn trains from scratch"):
        CAMClassifier("small_cnn", num_classes=3, pretrained="imagenet")


@pytest.mark.parametrize("backbone, output_stride, side", [
    ("mobilenet_v2", 32, 2), ("mobilenet_v2", 16, 4), ("resnet50", 16, 4)])
def test_output_stride_sets_the_cam_resolution(backbone, output_stride, side):
    model = CAMClassifier(backbone, num_classes=5, output_stride=output_stride).eval()
    output = model(torch.randn(1, 3, 64, 64))
    assert output["cam"].shape == (1, 5, side, side)
    assert torch.allclose(output["logits"], output["cam"].mean(dim=(2, 3)), atol=1e-6)


def test_dilation_keeps_the_weights_and_only_changes_the_resolution():
    plain = torchvision.models.mobilenet_v2().features.eval()
    model = CAMClassifier("mobilenet_v2", num_classes=2, output_stride=16)
    model.trunk.features.load_state_dict(plain.state_dict())
    images = torch.randn(1, 3, 64, 64)
    # up to block 13 (stride 16) nothing changed
    assert torch.allclose(model.trunk.features.eval()[:14](images), plain[:14](images))


def test_unsupported_strides_are_clear_errors():
    with pytest.raises(SPMLError, match="use resnet50, not resnet18"):
        CAMClassifier("resnet18", num_classes=3, output_stride=16)
    with pytest.raises(SPMLError, match=r"model.output_stride must be one of \(16, 32\), got 8"):
        CAMClassifier("mobilenet_v2", num_classes=3, output_stride=8)
