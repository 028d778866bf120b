"""Using a finished run: predict and evaluate with its export, against the run's own test scores and metrics."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ignore.data.format import load_dataset
from ignore.evaluate import main as evaluate_main
from ignore.predict import main as predict_main
from test_train import PYTHON, run_train, tiny_run_overrides


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_train(*tiny_run_overrides(tiny_dataset, run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def test_images(tiny_dataset):
    data = load_dataset(tiny_dataset)
    return [data.image_root / name for name in data.splits["test"]["image"]]


def test_predict_reproduces_the_test_scores_and_names_a_corrupt_file(finished_run, test_images, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    inputs = test_images[:5] + [corrupt] + test_images[5:]
    predict_main(["--model", str(finished_run / "export"), *map(str, inputs), "--out", str(tmp_path / "preds.csv"),
                  "--batch-size", "4", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert f"unreadable: {corrupt}: cannot decode image" in err
    assert "16 images predicted, 1 unreadable (named above)" in err
    with open(tmp_path / "preds.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["path", "predicted", "class0", "class1", "class2", "class3"]
    assert [row[0] for row in rows[1:]] == [str(path) for path in test_images]
    probabilities = np.array([[float(value) for value in row[2:]] for row in rows[1:]])
    np.testing.assert_allclose(probabilities, np.load(finished_run / "test_scores.npy"), atol=1e-5)
    for row, scores in zip(rows[1:], probabilities):  # the classes at 0.5 or above, most probable first
        expected = [f"class{index}" for index in np.argsort(-scores, kind="stable") if scores[index] >= 0.5]
        assert row[1] == ";".join(expected)


def test_predict_walks_folders_and_writes_json_lines_with_top_k(finished_run, test_images, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(test_images[0], folder / "a.png")
    shutil.copy(test_images[1], folder / "nested" / "b.png")
    (folder / "notes.txt").write_text("not an image, not an image extension: left out")
    # a 16-bit greyscale image, as a scanner writes it
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(folder / "nested" / "deep.png")
    predict_main(["--model", str(finished_run / "export"), str(folder), "--out", str(tmp_path / "preds.jsonl"),
                  "--threshold", "0", "--top-k", "2"])
    records = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [record["path"] for record in records] == [str(folder / "a.png"), str(folder / "nested" / "b.png"),
                                                      str(folder / "nested" / "deep.png")]
    for record in records:
        ranked = sorted(record["probabilities"], key=lambda name: -record["probabilities"][name])
        assert record["predicted"] == ranked[:2]
    scores = np.load(finished_run / "test_scores.npy")
    np.testing.assert_allclose(list(records[0]["probabilities"].values()), scores[0], atol=1e-5)
    assert "3 images predicted, 0 unreadable" in capsys.readouterr().err


@pytest.mark.parametrize("make_inputs, message", [
    (lambda tmp_path: [], "error: no images given: name image files or folders after --model"),
    (lambda tmp_path: [tmp_path / "bad1.png", tmp_path / "bad2.jpg"], "error: none of the 2 images could be read"),
    (lambda tmp_path: [tmp_path / "missing.png"], "missing.png: no such file or folder"),
])
def test_predict_with_nothing_readable_exits_2(finished_run, tmp_path, capsys, make_inputs, message):
    (tmp_path / "bad1.png").write_bytes(b"junk")
    (tmp_path / "bad2.jpg").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        predict_main(["--model", str(finished_run / "export"), *map(str, make_inputs(tmp_path)), "--num-workers", "0"])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_evaluate_equals_the_runs_test_metrics(finished_run, tiny_dataset, tmp_path, capsys):
    evaluate_main(["--model", str(finished_run / "export"), "--data", str(tiny_dataset), "--out",
                   str(tmp_path / "metrics.json"), "--batch-size", "5", "--num-workers", "0"])
    ours = json.loads((tmp_path / "metrics.json").read_text())
    run = json.loads((finished_run / "metrics.json").read_text())["test"]
    assert ours["images"] == 16 and ours["split"] == "test"
    assert ours["mAP"] == pytest.approx(run["mAP"], abs=1e-9)
    assert ours["per_class_AP"] == pytest.approx(run["per_class_AP"], abs=1e-9)
    assert (ours["CF1"], ours["OF1"]) == pytest.approx((run["CF1"], run["OF1"]), abs=1e-9)
    assert f"test (16 images): mAP {run['mAP']:.2f}" in capsys.readouterr().out


def test_evaluate_under_a_two_process_launch_equals_one_process(finished_run, tiny_dataset, tmp_path):
    # 16 images over 2 processes in batches of 3: the last batches are padded, and the padding must be dropped
    launcher = (PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ignore.evaluate")
    result = run_train("--model", str(finished_run / "export"), "--data", str(tiny_dataset), "--split", "val",
                       "--out", str(tmp_path / "two.json"), "--batch-size", "3", "--num-workers", "0",
                       launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluate_main(["--model", str(finished_run / "export"), "--data", str(tiny_dataset), "--split", "val",
                   "--out", str(tmp_path / "one.json"), "--num-workers", "0"])
    two, one = (json.loads((tmp_path / name).read_text()) for name in ("two.json", "one.json"))
    assert two["images"] == one["images"] == 8
    assert two["per_class_AP"] == pytest.approx(one["per_class_AP"], abs=1e-9)
    assert result.stdout.count("val (8 images)") == 1  # printed by the main process only


def test_evaluate_refuses_a_dataset_with_other_classes(finished_run, tiny_dataset, tmp_path, capsys):
    dataset = tmp_path / "renamed"
    shutil.copytree(tiny_dataset, dataset)
    meta = json.loads((dataset / "spml_meta.json").read_text())
    meta["class_names"] = ["cat", "dog", "car", "bus"]
    (dataset / "spml_meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit) as stop:
        evaluate_main(["--model", str(finished_run / "export"), "--data", str(dataset)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {dataset}: its classes ['cat', 'dog', 'car', 'bus'] are not the model's "
        "['class0', 'class1', 'class2', 'class3']")
