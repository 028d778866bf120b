"""Query2Label: output contract, the CAM from its cross-attention, gradients, mixed precision,
and a real 2-process IGNORE run whose export reproduces its test scores."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ignore.config import load_config
from ignore.data.format import load_dataset
from ignore.errors import SPMLError
from ignore.inference import load_export, predict_probabilities
from ignore.losses.masking import positive_region_mask
from ignore.models.build import build_model
from ignore.models.position import sine_position_embedding
from ignore.models.query2label import Attention, Query2Label
from ignore.training.optim import build_optimizer
from training_runs import TWO_PROCESSES, run_train, tiny_run_overrides

TINY = dict(hidden_dim=32, heads=4, encoder_layers=1, decoder_layers=2, ffn_dim=64)


@pytest.mark.parametrize("backbone, size, side", [("small_cnn", 32, 4), ("small_cnn", 48, 6), ("small_cnn", 64, 8),
                                                  ("resnet18", 96, 3)])
def test_shapes_and_the_cam_is_attention_times_the_feature_mean(backbone, size, side):
    model = Query2Label(backbone, num_classes=5, **TINY).eval()
    images = torch.randn(2, 3, size, size)
    output = model(images)
    assert output["logits"].shape == (2, 5) and output["cam"].shape == (2, 5, side, side)
    feature_mean = model.forward_features(images).mean(dim=1, keepdim=True)
    attention = output["cam"] / feature_mean  # each class's cross-attention over the cells sums to 1
    assert torch.allclose(attention.sum(dim=(2, 3)), torch.ones(2, 5), atol=1e-5)
    assert (attention >= 0).all()


def test_a_list_of_views_gives_one_output_each_and_between_sees_the_first():
    model = Query2Label("small_cnn", num_classes=3, **TINY).eval()
    first, second = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    seen = []
    outputs = model([first, second], between=lambda output: seen.append(output["logits"]))
    assert torch.equal(seen[0], outputs[0]["logits"])
    assert torch.allclose(outputs[1]["logits"], model(second)["logits"], atol=1e-6)


def test_hand_set_attention_on_one_cell_masks_the_region_around_that_cell():
    # No encoder, a zero input projection: the keys are the position embeddings alone. Query c
    # is s * (position of cell target[c]): its scores peak at that cell, by far (s large).
    num_classes, dim, side = 4, 16, 8
    model = Query2Label("small_cnn", num_classes, hidden_dim=dim, heads=1, encoder_layers=0, decoder_layers=1,
                        ffn_dim=8).eval()
    target = torch.tensor([0, 21, 38, 49])  # row-major cells of the 8x8 map: (0,0), (2,5), (4,6), (6,1)
    position = sine_position_embedding(side, side, dim, "cpu")
    layer = model.decoder[-1].cross_attention
    with torch.no_grad():
        model.projection.weight.zero_(), model.projection.bias.zero_()
        layer.key.weight.copy_(torch.eye(dim)), layer.key.bias.zero_()
        model.label_queries.copy_(torch.eye(num_classes, dim))  # query c = e_c, so W_q[:, c] is its query
        layer.query.weight.zero_(), layer.query.bias.zero_()
        layer.query.weight[:, :num_classes] = 400 * position[target].T

    images = torch.randn(2, 3, 64, 64)
    cam = model(images)["cam"]
    feature_mean = model.forward_features(images).mean(dim=1)  # (2, 8, 8)
    assert (feature_mean > 0).all()  # ReLU features: the weighting keeps the attention's peak
    one_hot = F.one_hot(target, side * side).float().view(num_classes, side, side)
    assert torch.allclose(cam / feature_mean[:, None], one_hot.expand(2, -1, -1, -1), atol=1e-6)

    observed = torch.zeros(2, num_classes, dtype=torch.bool)
    observed[0, 1] = observed[1, 3] = True  # image 0: cell (2,5); image 1: cell (6,1)
    mask = positive_region_mask(cam, observed, (64, 64), threshold=0.5)
    expected = F.interpolate(one_hot[[1, 3], None], size=(64, 64), mode="bilinear", align_corners=False) > 0.5
    assert torch.equal(mask.bool(), expected)
    for image, (row, column) in enumerate([(2, 5), (6, 1)]):
        kept = mask[image, 0].nonzero()
        assert len(kept) > 0
        assert kept[:, 0].min() >= row * 8 - 4 and kept[:, 0].max() < row * 8 + 12  # within half a cell
        assert kept[:, 1].min() >= column * 8 - 4 and kept[:, 1].max() < column * 8 + 12
        assert mask[image, 0, row * 8 + 4, column * 8 + 4] == 1  # the cell's centre is kept


def test_gradients_reach_the_queries_the_transformer_the_classifier_and_the_trunk():
    model = Query2Label("small_cnn", num_classes=3, **TINY).train()
    model(torch.randn(4, 3, 32, 32))["logits"].sum().backward()
    for name in ("label_queries", "classifier.weight", "decoder.0.cross_attention.query.weight",
                 "decoder.1.cross_attention.key.weight", "decoder.1.feed_forward.0.weight",
                 "encoder.0.attention.value.weight", "projection.weight", "trunk.conv1.weight"):
        gradient = dict(model.named_parameters())[name].grad
        assert gradient is not None and gradient.abs().sum() > 0, name


def test_bf16_autocast_gives_finite_outputs_close_to_float32():
    model = Query2Label("small_cnn", num_classes=5, **TINY).eval()
    images = torch.randn(2, 3, 48, 48)
    reference = model(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(images)
    for name in ("logits", "cam"):
        assert torch.isfinite(mixed[name]).all(), name
    assert (mixed["logits"].float() - reference["logits"]).abs().max() < 0.1
    scale = reference["cam"].abs().max()
    assert (mixed["cam"].float() - reference["cam"]).abs().max() < 0.05 * scale


def test_fp16_autocast_attention_scores_do_not_overflow():
    attention = Attention(dim=32, heads=2, dropout=0.0)
    with torch.no_grad():
        for projection in (attention.query, attention.key, attention.value, attention.out):
            projection.weight.copy_(torch.eye(32)), projection.bias.zero_()
    query, key = 300 * torch.randn(1, 3, 32).sign(), 300 * torch.randn(1, 5, 32).sign()
    naive = query.half()[:, :, :16] @ key.half()[:, :, :16].transpose(1, 2)  # one head's raw scores in fp16
    assert torch.isinf(naive).any()  # the overflow this guards against
    with torch.autocast("cpu", dtype=torch.float16):
        output, weights = attention(query, key, key)
    assert torch.isfinite(output).all() and torch.isfinite(weights).all()
    assert torch.allclose(weights.sum(dim=-1), torch.ones(1, 3))


def test_head_parameters_are_everything_outside_the_trunk():
    model = Query2Label("small_cnn", num_classes=3, **TINY)
    optimizer = build_optimizer(model, load_config().optim, head_lr_multiplier=10, lr=1e-3)
    trunk, head = optimizer.param_groups
    assert {id(p) for p in trunk["params"]} == {id(p) for p in model.trunk.parameters()}
    assert len(head["params"]) == len(list(model.parameters())) - len(trunk["params"])
    assert head["lr"] == pytest.approx(1e-2)


def test_build_model_reads_the_q2l_keys_and_refuses_bad_ones():
    config = load_config(overrides=["model.name=q2l", "model.q2l_hidden_dim=24", "model.q2l_heads=3",
                                    "model.q2l_encoder_layers=2", "model.q2l_decoder_layers=3", "model.q2l_ffn_dim=16"])
    model = build_model(config.model, 4)
    assert isinstance(model, Query2Label) and len(model.encoder) == 2 and len(model.decoder) == 3
    assert model.label_queries.shape == (4, 24) and model.decoder[0].feed_forward[0].out_features == 16
    with pytest.raises(SPMLError, match=r"^model.q2l_hidden_dim \(30\) must be a multiple of 4 .* \(4\)$"):
        build_model(load_config(overrides=["model.name=q2l", "model.q2l_hidden_dim=30"]).model, 4)
    with pytest.raises(SPMLError, match=r"^model.name 'vit' is not one of \('cam', 'q2l'\)$"):
        build_model(load_config(overrides=["model.name=vit"]).model, 4)
    with pytest.raises(SPMLError, match=r"^config key 'model.q2l_decoder_layers' must be >= 1, got 0$"):
        load_config(overrides=["model.q2l_decoder_layers=0"])


def test_two_process_q2l_ignore_run_keeps_thresholds_identical_and_its_export_reproduces_the_scores(tiny_dataset,
                                                                                                  tmp_path):
    q2l = ("model.name=q2l", "model.q2l_hidden_dim=32", "model.q2l_ffn_dim=64", "model.head_lr_multiplier=1",
           "train.batch_size=4", "method.rule=ema")  # the EMA rule rejects in a run this short
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", *q2l), launcher=TWO_PROCESSES)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["thresholds_identical_across_ranks"] is True
    assert metrics["last_epoch_train"]["rejected"] > 0  # IGNORE rejected something after the warm-up

    model = load_export(tmp_path / "run" / "export")
    assert isinstance(model.network, Query2Label) and model.export_info["model"]["name"] == "q2l"
    data = load_dataset(tiny_dataset)
    images = [Image.open(data.image_root / name) for name in data.splits["test"]["image"]]
    probabilities = predict_probabilities(model, images).numpy()
    np.testing.assert_allclose(probabilities, np.load(tmp_path / "run" / "test_scores.npy"), atol=1e-5)
