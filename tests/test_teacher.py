"""A frozen teacher's per-image scores: the noisy oracle's values, the cache's reuse, a user's own teacher by
module:attribute, the ImageNet teacher's class map, and the one-line errors."""
import shutil
import sys

import numpy as np
import pytest
import torch
import torchvision
from accelerate import Accelerator

from ignore.config import MethodConfig
from ignore.data.format import load_dataset
from ignore.data.images import open_rgb
from ignore.errors import SPMLError
from ignore.losses.noisy_oracle import NOISE_EPOCH, NOISE_SEED, NoisyOracle
from ignore.losses.rejection import entry_uniforms
from ignore.losses.teacher import TrainingImages, build_teacher, cache_path, shared_teacher_scores, teacher_name
from ignore.models.imagenet_teacher import ImageNetTeacher, read_class_map
from test_pretrained import no_network, torch_home  # noqa: F401 (fixtures)

CLASSES = ["class0", "class1", "class2", "class3"]


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


@pytest.fixture
def images(tiny_dataset, tmp_path):
    """The tiny dataset's training split, in a copy of its own: the cache is written beside it."""
    folder = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, folder)
    data = load_dataset(folder)
    return TrainingImages(data.splits["train"], 10, data.image_root, data.folder, data.class_names)


def load_image(images, row):
    return open_rgb(images.image_root, images.split[row]["image"])


class MeanColour:
    """A stand-in image teacher: class c scores the image's mean of channel c % 3, in [0, 1]; counts its images."""

    name = "mean colour/v1"

    def __init__(self, class_names, device):
        self.classes, self.scored = len(class_names), 0

    def scores(self, images):
        self.scored += len(images)
        means = torch.stack([torchvision.transforms.functional.pil_to_tensor(image).float().mean(dim=(1, 2)) / 255
                             for image in images])
        return means[:, [c % 3 for c in range(self.classes)]]


def test_the_noisy_oracle_is_the_clean_labels_plus_uniform_noise_of_each_row_and_class():
    labels = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0]])
    oracle = NoisyOracle(labels, noise=0.5)
    uniforms = entry_uniforms(NOISE_SEED, NOISE_EPOCH, torch.tensor([2, 0]), 3)
    expected = np.clip(labels[[2, 0]] + 0.5 * (2 * uniforms.numpy() - 1), 0, 1)
    scores = oracle.scores_of_rows(torch.tensor([2, 0]))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6)
    assert torch.equal(oracle.scores_of_rows(torch.tensor([0])), scores[1:])  # a row's scores, whatever the batch
    assert ((scores - torch.tensor(labels[[2, 0]], dtype=torch.float)).abs() <= 0.5).all()
    assert torch.equal(NoisyOracle(labels, noise=0.0).scores_of_rows(torch.arange(3)), torch.tensor(labels).float())
    assert oracle.name == "noisy_oracle-0.5"


def test_the_scores_are_computed_once_per_row_then_read_from_the_cache(accelerator, images):
    teacher = MeanColour(CLASSES, "cpu")
    name = teacher_name(teacher, MethodConfig())
    assert name == "mean_colour_v1"
    first = shared_teacher_scores(accelerator, teacher, name, images)
    assert first.shape == (10, 4) and teacher.scored == 10  # the run's 10 rows only
    path = cache_path(images, name)
    assert path.parent == images.folder / "teacher_scores" and path.is_file()
    on_disk = np.load(path)
    assert on_disk.shape == (32, 4) and np.isnan(on_disk[10:]).all()  # the split's 32 rows, 22 never scored
    assert torch.equal(first[3], MeanColour(CLASSES, "cpu").scores([load_image(images, 3)])[0])

    again = shared_teacher_scores(accelerator, teacher, name, images)
    assert teacher.scored == 10 and torch.equal(again, first)  # read back, nothing scored
    images.rows = 32
    every_row = shared_teacher_scores(accelerator, teacher, name, images)
    assert teacher.scored == 32 and torch.equal(every_row[:10], first)  # only the 22 missing rows
    assert not np.isnan(np.load(path)).any()

    np.save(path, np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(SPMLError, match=r"holds \(5, 4\) teacher scores, the training split needs \(32, 4\)"):
        shared_teacher_scores(accelerator, teacher, name, images)


def test_a_teacher_of_your_own_is_module_colon_attribute(images, tmp_path, monkeypatch):
    (tmp_path / "my_teachers.py").write_text("class Clip:\n    def __init__(self, class_names, device):\n"
                                             "        self.class_names, self.device = class_names, device\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher = build_teacher(MethodConfig(teacher="my_teachers:Clip"), images, "cpu")
    assert teacher.class_names == CLASSES and teacher.device == "cpu"
    assert teacher_name(teacher, MethodConfig(teacher="my_teachers:Clip")) == "my_teachers_Clip"  # no name: the setting
    sys.modules.pop("my_teachers")
    with pytest.raises(SPMLError, match="method.teacher 'clip' is neither a built-in teacher "
                                        r"\(noisy_oracle \| imagenet_mobilenet_v2\) nor module:attribute of your own"):
        build_teacher(MethodConfig(teacher="clip"), images, "cpu")
    with pytest.raises(SPMLError, match="method.teacher 'no_such_module:Clip': cannot import it"):
        build_teacher(MethodConfig(teacher="no_such_module:Clip"), images, "cpu")


@pytest.mark.parametrize("scores, message", [
    (torch.zeros(3, 4), r"scores\(\) returned shape \(3, 4\) for 2 images of 4 classes"),
    (torch.full((2, 4), 1.5), r"scores\(\) returned values outside \[0, 1\]"),
])
def test_scores_that_are_not_one_row_per_image_in_0_1_stop_with_one_line(accelerator, images, scores, message):
    class Broken:
        def scores(self, batch):
            return scores

    images.rows = 2
    with pytest.raises(SPMLError, match=f"teacher broken: {message}"):
        shared_teacher_scores(accelerator, Broken(), "broken", images)


def test_the_imagenet_teacher_adds_up_the_probabilities_of_each_class_indices(images, tmp_path, torch_home,
                                                                              no_network):  # noqa: F811
    class_map = tmp_path / "map.json"
    class_map.write_text('{"class0": [1, 2], "class2": [980]}')  # class1, class3: no ImageNet class, score 0
    teacher = build_teacher(MethodConfig(teacher="imagenet_mobilenet_v2", teacher_class_map=str(class_map)),
                            images, "cpu")
    assert isinstance(teacher, ImageNetTeacher) and teacher.name.startswith("imagenet_mobilenet_v2-")
    pictures = [load_image(images, 0), load_image(images, 1)]
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    network = torchvision.models.mobilenet_v2(weights=weights).eval()
    with torch.no_grad():
        probabilities = network(torch.stack([weights.transforms()(p) for p in pictures])).softmax(dim=1)
    expected = torch.stack([probabilities[:, 1] + probabilities[:, 2], torch.zeros(2), probabilities[:, 980],
                            torch.zeros(2)], dim=1)
    torch.testing.assert_close(teacher.scores(pictures), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("text, message", [
    ('{"dog": [1]}', "'dog' is not a class of the dataset"),
    ('{"class0": [1000]}', "'class0' must map to a list of ImageNet class indices in 0..999"),
    ('[1, 2]', r"expected an object \{class name: \[indices\]\}"),
    ('{"class0": [1]', "cannot read it as JSON"),
])
def test_a_bad_class_map_is_one_line(tmp_path, text, message):
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(SPMLError, match=f"method.teacher_class_map {path}: {message}"):
        read_class_map(str(path), CLASSES)
    with pytest.raises(SPMLError, match="needs method.teacher_class_map"):
        read_class_map("", CLASSES)


def test_the_imagenet_teacher_without_its_weights_names_the_setting_and_the_file(images, tmp_path, monkeypatch,
                                                                                 no_network):  # noqa: F811
    class_map = tmp_path / "map.json"
    class_map.write_text('{"class0": [1]}')
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(SPMLError, match=r"method.teacher: mobilenet_v2 IMAGENET1K_V1 weights are not in .*"
                                        r"mobilenet_v2-b0353104\.pth and could not be downloaded"):
        build_teacher(MethodConfig(teacher="imagenet_mobilenet_v2", teacher_class_map=str(class_map)), images, "cpu")
