"""The built-in demo dataset: canvases, labels, protocol, determinism and the cache."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_script import load_script
from ignore.data import demo
from ignore.data.format import load_dataset
from ignore.data.protocol import observe_positives
from ignore.errors import SPMLError

NUM_TRAIN, NUM_TEST = 60, 20


@pytest.fixture(scope="module")
def pools():
    return demo.digit_pools()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small demo dataset, built once: (path, the generator's own record of it)."""
    path = demo.ensure_demo_dataset(tmp_path_factory.mktemp("cache") / "demo", seed=5,
                                    num_train=NUM_TRAIN, num_test=NUM_TEST)
    return path, demo.generate_canvases(5, NUM_TRAIN, NUM_TEST)


def png_bytes(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted((path / "images").rglob("*.png"))}


def test_digit_pools_are_disjoint(pools):
    train = {image.tobytes() for pool in pools["train"] for image in pool}
    test = {image.tobytes() for pool in pools["test"] for image in pool}
    assert len(train) + len(test) == 1797
    assert not train & test
    assert len(train) == round(0.8 * 1797)


def nearest_class_mean(region, pools):
    """The class whose mean 8x8 digit correlates best with a box's content."""
    templates = np.stack([pool.mean(0).ravel() for pool in pools]).astype(float)
    templates -= templates.mean(1, keepdims=True)
    gray = Image.fromarray(region.mean(2).astype(np.uint8))
    small = np.asarray(gray.resize((8, 8), Image.Resampling.BOX), dtype=float).ravel()
    return int(np.argmax(templates @ (small - small.mean()) / np.linalg.norm(templates, axis=1)))


def test_draw_canvas_matches_its_record(pools):
    rng = np.random.default_rng(3)
    counts = set()
    recognised = []
    for _ in range(200):
        image, labels, boxes = demo.draw_canvas(rng, pools["train"])
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert 1 <= len(labels) <= 4 and len(set(labels)) == len(labels) == len(boxes)
        assert all(0 <= digit <= 9 for digit in labels)
        counts.add(len(labels))
        coverage = np.zeros((64, 64), dtype=int)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 and 0 <= y0 and x1 <= 64 and y1 <= 64
            assert x1 - x0 == y1 - y0 and 16 <= x1 - x0 <= 24
            coverage[y0:y1, x0:x1] += 1
        assert coverage.max() == 1  # no pixel lies in two boxes
        background = image[coverage == 0]
        assert 25 < background.mean() < 35  # noise of mean 30, clipped at 0
        for x0, y0, x1, y1 in boxes:
            region = image[y0:y1, x0:x1]
            assert region.mean() > background.mean() + 10
            assert region.max() > 150  # the strokes are bright
        recognised += [nearest_class_mean(image[y0:y1, x0:x1], pools["train"]) == digit
                       for digit, (x0, y0, x1, y1) in zip(labels, boxes)]
    assert counts == {1, 2, 3, 4}
    # boxes[i] holds the digit labels[i]: a crude classifier agrees far above chance (10%).
    assert np.mean(recognised) > 0.7


def test_label_matrix_is_what_draw_canvas_drew(pools):
    canvases = demo.generate_canvases(4, 30, 10)
    for phase, rng in zip(("train", "test"), np.random.default_rng(4).spawn(2)):
        images, label_matrix, boxes, drawn_labels = canvases[phase]
        for row in range(len(images)):
            image, labels, canvas_boxes = demo.draw_canvas(rng, pools[phase])
            assert np.flatnonzero(label_matrix[row]).tolist() == sorted(labels)
            assert boxes[row] == canvas_boxes and drawn_labels[row] == labels
            np.testing.assert_array_equal(images[row], image)


def test_boxes_intersect_is_half_open():
    assert demo.boxes_intersect((0, 0, 10, 10), (9, 9, 20, 20))
    assert not demo.boxes_intersect((0, 0, 10, 10), (10, 0, 20, 10))  # touching shares no pixel
    assert not demo.boxes_intersect((0, 0, 10, 10), (0, 10, 10, 20))


def test_dataset_holds_the_drawn_canvases_and_the_protocol(built):
    path, canvases = built
    dataset = load_dataset(path)
    assert dataset.class_names == [str(digit) for digit in range(10)]
    assert dataset.image_root == path / "images"
    protocol = dataset.meta["protocol"]
    assert (protocol["demo_seed"], protocol["num_train"], protocol["num_test"]) == (5, NUM_TRAIN, NUM_TEST)
    assert (protocol["observe_seed"], protocol["split_seed"], protocol["val_fraction"]) == (1200, 1200, 0.2)
    assert {name: len(split) for name, split in dataset.splits.items()} == {"train": 48, "val": 12, "test": 20}

    expected_observed = {phase: observe_positives(canvases[phase][1]) for phase in ("train", "test")}
    seen_train_rows = []
    for name, split in dataset.splits.items():
        phase = "test" if name == "test" else "train"
        images, label_matrix, *_ = canvases[phase]
        for row in split:
            assert row["image"].startswith(f"{phase}/")
            index = int(Path(row["image"]).stem)
            if phase == "train":
                seen_train_rows.append(index)
            labels = np.array(row["labels"])
            assert 1 <= labels.sum() <= 4
            np.testing.assert_array_equal(labels, label_matrix[index])
            np.testing.assert_array_equal(row["observed"], expected_observed[phase][index])
            observed = np.array(row["observed"])
            assert (observed == 1).sum() == 1 and labels[observed == 1] == 1
            with Image.open(dataset.image_root / row["image"]) as picture:
                assert picture.mode == "RGB" and picture.size == (64, 64)
                np.testing.assert_array_equal(np.asarray(picture), images[index])
    assert sorted(seen_train_rows) == list(range(NUM_TRAIN))


def test_same_seed_same_files_other_seed_differs(built, tmp_path):
    path, _ = built
    again = demo.ensure_demo_dataset(tmp_path / "again", seed=5, num_train=NUM_TRAIN, num_test=NUM_TEST)
    other = demo.ensure_demo_dataset(tmp_path / "other", seed=6, num_train=NUM_TRAIN, num_test=NUM_TEST)
    assert png_bytes(again) == png_bytes(path)
    for name in ("train", "val", "test"):
        assert load_dataset(again).splits[name][:] == load_dataset(path).splits[name][:]
    other_pngs, pngs = png_bytes(other), png_bytes(path)
    assert other_pngs.keys() == pngs.keys()
    assert all(other_pngs[name] != pngs[name] for name in pngs)


def test_test_canvases_do_not_depend_on_num_train():
    small, large = demo.generate_canvases(1, 3, 4), demo.generate_canvases(1, 7, 4)
    np.testing.assert_array_equal(small["test"][0], large["test"][0])
    np.testing.assert_array_equal(small["train"][0], large["train"][0][:3])


def test_cached_dataset_is_reused(built, monkeypatch):
    path, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*")}

    def no_build(*args):
        raise AssertionError("a cached demo dataset was built again")

    monkeypatch.setattr(demo, "build_demo_dataset", no_build)
    assert demo.ensure_demo_dataset(path, seed=5, num_train=NUM_TRAIN, num_test=NUM_TEST) == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == stamps


def test_default_cache_dir_and_rebuild_on_other_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("SPML_CACHE", str(tmp_path / "cache"))
    path = demo.ensure_demo_dataset(seed=2, num_train=10, num_test=3)
    assert path == tmp_path / "cache" / "demo-v1-seed2-10-3"
    assert load_dataset(path).meta["sizes"]["test"] == 3
    # The same directory asked for other sizes: the old demo is replaced, not reused.
    rebuilt = demo.ensure_demo_dataset(path, seed=2, num_train=10, num_test=4)
    assert rebuilt == path and load_dataset(path).meta["sizes"]["test"] == 4
    assert not (path / "images" / "test" / "000004.png").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["demo-v1-seed2-10-3"]


def test_killed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    out_dir = tmp_path / "demo"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "write_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo_dataset(out_dir, seed=0, num_train=10, num_test=3)
    assert not out_dir.exists()
    monkeypatch.undo()
    assert demo.ensure_demo_dataset(out_dir, seed=0, num_train=10, num_test=3) == out_dir
    assert load_dataset(out_dir).meta["sizes"] == {"train": 8, "val": 2, "test": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # the stale build dir is gone


def test_refuses_a_directory_that_is_not_a_demo(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SPMLError, match="not a demo dataset"):
        demo.ensure_demo_dataset(tmp_path, seed=0, num_train=10, num_test=3)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(SPMLError, match="at least 2 train"):
        demo.ensure_demo_dataset(tmp_path / "x", num_train=1, num_test=3)


def test_statistics(built):
    path, canvases = built
    stats = demo.demo_statistics(path)
    assert stats["sizes"] == {"train": 48, "val": 12, "test": 20}
    assert stats["num_classes"] == 10
    train_labels = load_dataset(path).splits["train"].with_format("numpy")["labels"]
    num_rows, num_positives = len(train_labels), int(np.asarray(train_labels).sum())
    assert stats["labels_per_image"] == pytest.approx(num_positives / num_rows)
    # One positive observed per row, every other label unknown.
    assert stats["positives_unobserved"] == pytest.approx((num_positives - num_rows) / num_positives)
    assert stats["unknown_positive"] == pytest.approx((num_positives - num_rows) / (9 * num_rows))


def test_prepare_demo_script(built, capsys):
    path, _ = built
    main = load_script("prepare_demo").main
    main(["--out", str(path), "--seed", "5", "--num-train", str(NUM_TRAIN), "--num-test", str(NUM_TEST)])
    output = capsys.readouterr().out
    assert str(path) in output
    assert re.search(r"^  train images +48$", output, re.MULTILINE)
    assert re.search(r"^  classes +10$", output, re.MULTILINE)
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(path), "--num-train", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: the demo needs at least 2 train")


def test_the_sparse_layout_is_shaped_like_voc(pools):
    """20 classes (each digit in red or blue), 1 to 3 a canvas (60/30/10%), 12..32 px: 2.6% of the
    unannotated labels are false negatives, as VOC's ~2% and COCO's 2.4%."""
    layout = demo.LAYOUTS["sparse"]
    assert layout.class_names == tuple(f"{digit}r" for digit in range(10)) + tuple(f"{digit}b" for digit in range(10))
    rng = np.random.default_rng(7)
    counts, sides, colour_right, recognised = [], [], [], []
    for _ in range(1000):
        image, labels, boxes = demo.draw_canvas(rng, pools["train"], layout)
        assert len(set(labels)) == len(labels) == len(boxes) and all(0 <= label < 20 for label in labels)
        counts.append(len(labels))
        for label, (x0, y0, x1, y1) in zip(labels, boxes):
            sides.append(x1 - x0)
            region = image[y0:y1, x0:x1].reshape(-1, 3).astype(float)
            strokes = region[region.max(1) > 120]  # the digit's pixels, not the background noise
            red, blue = strokes[:, 0].mean(), strokes[:, 2].mean()
            colour_right.append(red > blue + 50 if label < 10 else blue > red + 50)
            recognised.append(nearest_class_mean(image[y0:y1, x0:x1], pools["train"]) == label % 10)
    assert np.bincount(counts)[1:].tolist() == pytest.approx([600, 300, 100], abs=45)
    false_negative_share = (np.mean(counts) - 1) / 19  # of the 19 unannotated labels an image
    assert 0.02 <= false_negative_share <= 0.035
    assert min(sides) == 12 and max(sides) == 32  # objects from 3.5% to 25% of the canvas
    assert all(colour_right)  # the colour half of the class is in the pixels
    assert np.mean(recognised) > 0.6  # and so is the digit half


def test_the_sparse_dataset_is_cached_apart_with_its_classes_and_object_areas(tmp_path, monkeypatch):
    monkeypatch.setenv("SPML_CACHE", str(tmp_path / "cache"))
    sparse = demo.ensure_demo_dataset(seed=2, num_train=10, num_test=3, layout="sparse")
    dense = demo.ensure_demo_dataset(seed=2, num_train=10, num_test=3)
    assert (sparse.name, dense.name) == ("demo-sparse-v1-seed2-10-3", "demo-v1-seed2-10-3")
    meta = load_dataset(sparse).meta
    assert meta["class_names"] == list(demo.LAYOUTS["sparse"].class_names)
    assert meta["protocol"]["demo_layout"] == "sparse" and load_dataset(dense).meta["protocol"]["demo_layout"] == "dense"
    boxes = demo.generate_canvases(2, 10, 3, "sparse")["train"][2]
    areas = [(x1 - x0) * (y1 - y0) / 64 ** 2 for canvas in boxes for x0, y0, x1, y1 in canvas]
    assert meta["protocol"]["object_area"] == {"min": min(areas), "mean": pytest.approx(np.mean(areas)),
                                               "max": max(areas)}
    assert demo.demo_statistics(sparse)["object_area"] == meta["protocol"]["object_area"]
    with pytest.raises(SPMLError, match="demo layout 'voc' is not one of"):
        demo.ensure_demo_dataset(seed=2, num_train=10, num_test=3, layout="voc")
