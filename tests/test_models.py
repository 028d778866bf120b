"""The CAM model: output contract, trunk/head split and local pretrained weights."""
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from ignore.errors import SPMLError
from ignore.models.cam_model import CAMClassifier


@pytest.mark.parametrize("backbone, cam_side", [("small_cnn", 8), ("resnet18", 2)])
def test_logits_are_the_average_of_the_cam(backbone, cam_side):
    model = CAMClassifier(backbone, num_classes=5).eval()
    output = model(torch.randn(2, 3, 64, 64))
    assert output["cam"].shape == (2, 5, cam_side, cam_side)
    assert torch.allclose(output["logits"], output["cam"].mean(dim=(2, 3)))


def test_a_list_of_views_gives_one_output_each_with_its_own_batch_statistics():
    model = CAMClassifier("small_cnn", num_classes=3).train()
    first, second = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32) * 3
    together = model([first, second])
    assert torch.allclose(together[1]["logits"], model(second)["logits"], atol=1e-5)


def test_pretrained_resnet_weights_load_from_pth_and_safetensors(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    save_file({key: value.contiguous() for key, value in reference.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        model = CAMClassifier("resnet18", num_classes=3, pretrained=str(tmp_path / name))
        assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)


def test_mismatched_or_unreadable_weights_are_clear_errors(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(SPMLError, match="not a ResNet state dict"):
        CAMClassifier("resnet50", num_classes=3, pretrained=str(tmp_path / "r18.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SPMLError, match="junk.pth: cannot read weights"):
        CAMClassifier("resnet18", num_classes=3, pretrained=str(tmp_path / "junk.pth"))


def test_between_sees_the_first_views_output_before_the_second_forward():
    model = CAMClassifier("small_cnn", num_classes=3).eval()
    first, second = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    order = []
    model.register_forward_pre_hook(lambda module, inputs: order.append("forward"))
    outputs = model([first, second], between=lambda output: order.append(output["logits"]))
    assert order[0] == "forward" and order[-1] == "forward"  # the call itself, then each batch
    assert torch.equal(order[-2], outputs[0]["logits"]) and order[-3] == "forward"
