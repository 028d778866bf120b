"""The CAM normalisation rules, the fill of removed pixels and the CAM peak outside the kept region."""
import pytest
import torch
from accelerate import Accelerator

from ignore.config import MethodConfig
from ignore.data.views import IMAGENET
from ignore.losses.ignore import Ignore
from ignore.losses.masking import normalise_across_batch, outside_region_peak, positive_cam, positive_region_mask

# two images, one class, 1x2 pixels: raw positive maps [1, 4] and [3, 2]
CAM = torch.tensor([[[[1.0, 4.0]]], [[[3.0, 2.0]]]])
POSITIVE = torch.tensor([[True], [True]])


def test_authors_rule_by_hand():
    # per pixel over the batch: min [1, 2], max [3, 4]; (map - min) / max:
    # image 0: [(1-1)/3, (4-2)/4] = [0, 0.5]; image 1: [(3-1)/3, (2-2)/4] = [2/3, 0]
    normalised = positive_cam(CAM, POSITIVE, (1, 2), normalisation="authors")
    assert normalised.flatten().tolist() == pytest.approx([0.0, 0.5, 2 / 3, 0.0])
    assert positive_region_mask(CAM, POSITIVE, (1, 2), 0.6, "authors").flatten(1).tolist() == [[0, 0], [1, 0]]
    # per image over its own pixels, for contrast: [0, 1] and [1, 0]
    assert positive_cam(CAM, POSITIVE, (1, 2)).flatten(1).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_authors_rule_ignores_images_without_a_positive_and_keeps_nothing_for_a_batch_of_one():
    maps = torch.tensor([[[1.0, 4.0]], [[3.0, 2.0]], [[100.0, -100.0]]])
    with_third = normalise_across_batch(maps, torch.tensor([True, True, False]))
    assert torch.equal(with_third[:2], normalise_across_batch(maps[:2], torch.tensor([True, True])))
    alone = positive_region_mask(CAM[:1], POSITIVE[:1], (1, 2), 0.8, "authors")
    assert alone.sum().item() == 0  # (map - map) / map = 0 everywhere
    no_positive = positive_region_mask(CAM, torch.tensor([[True], [False]]), (1, 2), 0.8, "authors")
    assert no_positive[1].eq(1).all()  # an image without a positive keeps every pixel


def test_mask_fill_black_puts_the_normalised_black_outside_the_mask():
    method = Ignore(MethodConfig(mask_fill="black"), num_classes=1, accelerator=Accelerator(cpu=True))
    images = torch.ones(1, 3, 1, 2)
    masked = method.masked_images(images, torch.tensor([[[[1.0, 0.0]]]]))
    black = [-mean / std for mean, std in zip(IMAGENET["mean"], IMAGENET["std"])]
    assert masked[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert masked[0, :, 0, 1].tolist() == pytest.approx(black)
    mean_fill = Ignore(MethodConfig(), num_classes=1, accelerator=Accelerator(cpu=True))
    assert mean_fill.masked_images(images, torch.tensor([[[[1.0, 0.0]]]]))[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0]


def test_outside_peak_is_each_class_peak_outside_the_observed_positive_region():
    # one image, three classes, 1x3 cells; observed class 0 [0, 2, 4] normalises to [0, 0.5, 1]: at
    # threshold 0.4 the kept region is cells 1 and 2, so the peak outside is cell 0's value
    cam = torch.tensor([[[[0.0, 2.0, 4.0]], [[5.0, 9.0, -1.0]], [[-3.0, 7.0, 8.0]]]])
    observed = torch.tensor([[True, False, False]])
    assert outside_region_peak(cam, observed, 0.4).tolist() == [[0.0, 5.0, -3.0]]
    assert outside_region_peak(cam, observed, 0.6).tolist() == [[2.0, 9.0, 7.0]]  # region: cell 2 only
    # no observed positive: the region is the whole image, nothing lies outside, each class's lowest value
    assert outside_region_peak(cam, torch.zeros(1, 3, dtype=torch.bool), 0.4).tolist() == [[0.0, -1.0, -3.0]]
