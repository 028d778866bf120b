"""Decoding to RGB: 16-bit and float greyscale are scaled to 8 bits, not clipped to white."""
import numpy as np
import pytest
import torch
from PIL import Image

from ignore.data.images import open_rgb
from ignore.inference import predict_probabilities
from ignore.models.cam_model import CAMClassifier

GREY = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once


def saved(tmp_path, pixels, name):
    Image.fromarray(pixels).save(tmp_path / name)
    return name


def grey_of(image):
    """The one channel of an RGB image whose three channels must be equal."""
    rgb = np.asarray(image)
    assert image.mode == "RGB" and (rgb == rgb[..., :1]).all()
    return rgb[..., 0]


def test_16_bit_png_is_scaled_by_257(tmp_path):
    name = saved(tmp_path, GREY.astype(np.uint16) * 257, "grey16.png")  # the usual 8 -> 16 bit widening
    assert Image.open(tmp_path / name).mode == "I;16"
    np.testing.assert_array_equal(grey_of(open_rgb(tmp_path, name)), GREY)


def test_32_bit_integer_tiff_in_the_16_bit_range_is_scaled_by_257(tmp_path):
    name = saved(tmp_path, GREY.astype(np.int32) * 257, "grey32.tiff")
    assert Image.open(tmp_path / name).mode == "I"
    np.testing.assert_array_equal(grey_of(open_rgb(tmp_path, name)), GREY)


def test_float_tiff_in_0_1_is_scaled_by_255(tmp_path):
    name = saved(tmp_path, GREY.astype(np.float32) / 255, "grey.tiff")
    assert Image.open(tmp_path / name).mode == "F"
    np.testing.assert_array_equal(grey_of(open_rgb(tmp_path, name)), GREY)


def test_float_tiff_outside_0_1_spans_its_own_minimum_to_maximum(tmp_path):
    depth = np.array([[-2.0, 0.0], [3.0, 8.0]], dtype=np.float32)  # a depth map, say: no range of its own
    name = saved(tmp_path, depth, "depth.tiff")
    np.testing.assert_array_equal(grey_of(open_rgb(tmp_path, name)), [[0, 51], [128, 255]])


def test_inference_reads_a_16_bit_image_like_its_8_bit_original():
    torch.manual_seed(0)
    model = CAMClassifier("small_cnn", 3).eval()
    model.export_info = {"image_size": 16, **model.normalisation}
    eight_bit = Image.fromarray(GREY)
    sixteen_bit = Image.fromarray(GREY.astype(np.uint16) * 257)
    assert sixteen_bit.mode == "I;16"
    probabilities = predict_probabilities(model, [eight_bit, sixteen_bit])
    torch.testing.assert_close(probabilities[0], probabilities[1], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_8_bit_modes_convert_as_before(tmp_path, mode):
    image = Image.fromarray(GREY).convert(mode)
    image.save(tmp_path / "image.png")
    assert open_rgb(tmp_path, "image.png").tobytes() == image.convert("RGB").tobytes()
