"""Two processes learn what one learns at the same global batch (model.sync_batchnorm and the
global normalisation of masked_mean), under a real 2-process launch."""
import pytest
import torch
from torch import nn

from ignore.models.sync_batchnorm import GlobalBatchNorm, synchronise_batchnorm
from launching import run_worker


def results(out, processes):
    run_worker("process_equivalence_worker.py", out, processes=processes)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("equivalence")
    return results(folder / "one.pt", 1), results(folder / "two.pt", 2)


def test_global_batchnorm_and_normalisation_give_one_process_gradients_on_two(runs):
    one, two = runs[0]["global"], runs[1]["global"]
    assert [int(count.sum()) for count in two["rejected_per_rank"]] == [int(count.sum()) for count in one["rejected_per_rank"]]
    uneven = [count.tolist() for count in two["rejected_per_rank"] if count[0] != count[1]]
    assert uneven, "the ranks rejected the same number of entries: the normalisation went untested"
    for step, (single, double) in enumerate(zip(one["gradients"], two["gradients"])):
        torch.testing.assert_close(double, single, rtol=1e-4, atol=1e-6, msg=f"step {step}")
    for name, value in one["state"].items():  # weights and BatchNorm running statistics
        torch.testing.assert_close(two["state"][name].float(), value.float(), rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(two["thresholds"], one["thresholds"], rtol=1e-5, atol=1e-6)


def test_per_process_batchnorm_learns_something_else(runs):
    """The control: without global statistics the first step's gradient is already far off."""
    single, per_process = runs[0]["per_process"]["gradients"][0], runs[1]["per_process"]["gradients"][0]
    assert (per_process - single).norm() > 0.05 * single.norm()


def test_masked_mean_weighs_every_selected_entry_alike_across_ranks(runs):
    # 4 entries selected over both ranks (1 on rank 0, 3 on rank 1): each weighs 1/4, on either launch.
    expected = torch.tensor([0, 0, 0.25, 0, 0.25, 0.25, 0, 0.25])
    torch.testing.assert_close(runs[0]["masked_mean_gradient"], expected)
    torch.testing.assert_close(runs[1]["masked_mean_gradient"], expected)


def test_conversion_keeps_weights_buffers_and_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    model[1].running_mean.uniform_()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    converted = synchronise_batchnorm(model, torch.device("cpu"))
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[2][0], GlobalBatchNorm)
    after = converted.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value)


def test_one_process_global_batchnorm_is_plain_batchnorm():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3).train()
    converted = synchronise_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))[0].train()
    images = torch.randn(5, 3, 4, 4) * 3 + 1
    torch.testing.assert_close(converted(images), plain(images))
    torch.testing.assert_close(converted.running_var, plain.running_var)
