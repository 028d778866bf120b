"""Using a finished run: predict and evaluate with its export, against the run's own test scores and metrics."""
import csv
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ignore.data.format import load_dataset
from ignore.errors import SPMLError
from ignore.evaluate import main as evaluate_main
from ignore.inference import SPMLClassifier
from ignore.metrics import cf1_of1, f1_thresholds
from ignore.predict import main as predict_main
from ignore.training.tracking import trackers
from launching import TWO_CPU_PROCESSES
from training_runs import run_train, tiny_run_overrides


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


def labels_of(tiny_dataset, split):
    return np.asarray(load_dataset(tiny_dataset).splits[split]["labels"])


def predicted_at(scores, thresholds):
    """Each row's classes at or above their thresholds, most probable first, as the CSV's `predicted` column."""
    return [";".join(f"class{index}" for index in np.argsort(-row, kind="stable") if row[index] >= thresholds[index])
            for row in scores]


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
    thresholds = json.loads((finished_run / "export" / "config.json").read_text())["decision_thresholds"]
    assert [row[1] for row in rows[1:]] == predicted_at(probabilities, thresholds)  # the export's, by default


def test_the_export_holds_the_f1_thresholds_of_its_validation_scores_and_the_test_is_scored_at_them(
        finished_run, tiny_dataset):
    data = load_dataset(tiny_dataset)
    model = SPMLClassifier.from_export(finished_run / "export")
    predictions = model.predict([data.image_root / name for name in data.splits["val"]["image"]])
    val_scores = np.array([[prediction["probabilities"][name] for name in model.class_names]
                           for prediction in predictions])
    np.testing.assert_allclose(model.thresholds, f1_thresholds(val_scores, labels_of(tiny_dataset, "val")), atol=1e-5)
    test = json.loads((finished_run / "metrics.json").read_text())["test"]
    test_scores = np.load(finished_run / "test_scores.npy")
    at_thresholds = cf1_of1(test_scores, labels_of(tiny_dataset, "test"), model.thresholds)
    assert (test["CF1_val_thresholds"], test["OF1_val_thresholds"]) == pytest.approx(at_thresholds, abs=1e-9)
    assert (f"at the export's per-class decision thresholds, chosen on the validation split and used by "
            f"`ignore-predict`: CF1 {test['CF1_val_thresholds']:.2f}, OF1 {test['OF1_val_thresholds']:.2f}."
            ) in (finished_run / "report.md").read_text()


@pytest.fixture
def export_with_own_thresholds(finished_run, tmp_path):
    """A copy of the run's export whose thresholds predict class c on the top 2, 6, 10 and 14 test images."""
    export = tmp_path / "export"
    shutil.copytree(finished_run / "export", export)
    ordered = np.sort(np.load(finished_run / "test_scores.npy"), axis=0)[::-1]
    thresholds = [float(ordered[kept - 1, column] + ordered[kept, column]) / 2
                  for column, kept in enumerate((2, 6, 10, 14))]
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**config, "decision_thresholds": thresholds}))
    return export, thresholds


def test_predict_uses_the_exports_thresholds_and_threshold_overrides_them(export_with_own_thresholds, finished_run,
                                                                           test_images, tmp_path, capsys):
    export, thresholds = export_with_own_thresholds
    scores = np.load(finished_run / "test_scores.npy")
    for extra, expected in (([], predicted_at(scores, thresholds)),
                            (["--threshold", "0.5"], predicted_at(scores, [0.5] * 4))):
        predict_main(["--model", str(export), *map(str, test_images), "--out", str(tmp_path / "preds.csv"),
                      "--num-workers", "0", *extra])
        with open(tmp_path / "preds.csv", newline="") as file:
            assert [row[1] for row in list(csv.reader(file))[1:]] == expected
    rows = [row.split(";") for row in predicted_at(scores, thresholds)]
    assert [sum(f"class{index}" in row for row in rows) for index in range(4)] == [2, 6, 10, 14]

    config = json.loads((export / "config.json").read_text())
    del config["decision_thresholds"]  # as an export of an earlier version
    (export / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    predict_main(["--model", str(export), *map(str, test_images), "--out", str(tmp_path / "old.csv"),
                  "--num-workers", "0"])
    said = capsys.readouterr().err
    assert "this export stores no decision thresholds (trained by an earlier version): 0.5 for every class" in said
    with open(tmp_path / "old.csv", newline="") as file:
        assert [row[1] for row in list(csv.reader(file))[1:]] == predicted_at(scores, [0.5] * 4)


def test_the_classifier_predicts_paths_and_pil_images_at_its_thresholds_or_one_given(export_with_own_thresholds,
                                                                                     finished_run, test_images):
    export, thresholds = export_with_own_thresholds
    model = SPMLClassifier.from_export(str(export))
    scores = np.load(finished_run / "test_scores.npy")
    from_paths = model.predict(test_images, batch_size=5)
    with Image.open(test_images[3]) as image:
        one_image, an_image_and_a_path = model.predict(image), model.predict([image, test_images[4]])
    assert len(from_paths) == 16 and len(one_image) == 1 and len(an_image_and_a_path) == 2
    # the same image alone or in a batch of two: a batch's own convolution kernels may move the 8th digit
    assert one_image[0]["labels"] == an_image_and_a_path[0]["labels"]
    assert one_image[0]["probabilities"] == pytest.approx(an_image_and_a_path[0]["probabilities"], abs=1e-6)
    assert an_image_and_a_path[1]["labels"] == from_paths[4]["labels"]
    assert one_image[0]["probabilities"] == pytest.approx(from_paths[3]["probabilities"], abs=1e-6)
    probabilities = np.array([[prediction["probabilities"][name] for name in model.class_names]
                              for prediction in from_paths])
    np.testing.assert_allclose(probabilities, scores, atol=1e-5)
    assert [";".join(prediction["labels"]) for prediction in from_paths] == predicted_at(scores, thresholds)
    assert [";".join(prediction["labels"]) for prediction in model.predict(test_images, threshold=0.5)] == (
        predicted_at(scores, [0.5] * 4))
    assert model.predict(str(test_images[0]))[0]["labels"] == from_paths[0]["labels"]


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


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("where, reason", [("missing/out.{}", "the folder {folder} does not exist"),
                                           ("read_only/out.{}", "the folder {folder} is not writable"),
                                           ("a_folder.{}", "is a folder, not a file name")])
def test_an_unwritable_out_stops_before_any_inference(command, where, reason, tmp_path, monkeypatch, capsys):
    (tmp_path / "read_only").mkdir(mode=0o555)
    out = tmp_path / where.format("csv" if command == "predict" else "json")
    if out.name.startswith("a_folder"):
        out.mkdir()
    if "read_only" in where and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    main = {"predict": predict_main, "evaluate": evaluate_main}[command]

    def no_inference(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(f"ignore.{command}.load_export", no_inference)
    with pytest.raises(SystemExit) as stopped:
        main(["--model", str(tmp_path / "export"), *([str(tmp_path / "a.png")] if command == "predict" else []),
              "--out", str(out)])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --out {out}: {reason.format(folder=out.parent)}")


@pytest.mark.parametrize("command, flags, message", [
    ("predict", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("predict", ["--top-k", "-1"], "--top-k must be >= 0, got -1"),
    ("evaluate", ["--num-workers", "-1"], "--num-workers must be >= 0, got -1"),
])
def test_an_out_of_range_flag_is_one_line_naming_it(command, flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(f"ignore.{command}.load_export", lambda *args: pytest.fail("loaded before the flags"))
    main = {"predict": predict_main, "evaluate": evaluate_main}[command]
    with pytest.raises(SystemExit) as stopped:
        main(["--model", str(tmp_path), *(["a.png"] if command == "predict" else []), *flags])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_evaluate_equals_the_runs_test_metrics(finished_run, tiny_dataset, tmp_path, capsys):
    evaluate_main(["--model", str(finished_run / "export"), "--data", str(tiny_dataset), "--out",
                   str(tmp_path / "metrics.json"), "--batch-size", "5", "--num-workers", "0"])
    ours = json.loads((tmp_path / "metrics.json").read_text())
    run = json.loads((finished_run / "metrics.json").read_text())["test"]
    assert ours["images"] == 16 and ours["split"] == "test"
    assert ours["mAP"] == pytest.approx(run["mAP"], abs=1e-9)
    assert ours["per_class_AP"] == pytest.approx(run["per_class_AP"], abs=1e-9)
    assert (ours["CF1"], ours["OF1"]) == pytest.approx((run["CF1"], run["OF1"]), abs=1e-9)
    assert (ours["CF1_val_thresholds"], ours["OF1_val_thresholds"]) == pytest.approx(
        (run["CF1_val_thresholds"], run["OF1_val_thresholds"]), abs=1e-9)
    assert f"test (16 images): mAP {run['mAP']:.2f}" in capsys.readouterr().out


def test_evaluate_under_a_two_process_launch_equals_one_process(finished_run, tiny_dataset, tmp_path):
    # 16 images over 2 processes in batches of 3: the last batches are padded, and the padding must be dropped
    launcher = (*TWO_CPU_PROCESSES, "-m", "ignore.evaluate")
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


def test_the_report_holds_the_runs_numbers_and_its_bars_are_the_test_ap(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ignore.training.report import DPI, bar_axes, bar_figure_size
    from ignore.training.tracking import read_scalars

    metrics = json.loads((finished_run / "metrics.json").read_text())
    report = (finished_run / "report.md").read_text()
    test = metrics["test"]
    assert f"| {test['mAP']:.2f} | {test['CF1']:.2f} | {test['OF1']:.2f} |" in report
    for epoch in metrics["epochs"]:  # the false-negative AUROCs beside val mAP, the drop's first
        assert (f"| {epoch['epoch']} | {epoch['val_mAP']:.2f} | {epoch['train']['drop_auroc']:.3f} | "
                f"{epoch['train']['absolute_gap_auroc']:.3f} |") in report
    for index, ap in enumerate(test["per_class_AP"]):
        assert f"| class{index} | {ap:.2f} |" in report

    # scalars.jsonl, which the report reads, holds what TensorBoard got: 8 steps, 2 validations
    scalars = read_scalars(finished_run)
    events = EventAccumulator(str(finished_run / "tensorboard")).Reload()
    for name in ("train/loss", "train/gap_threshold", "train/rejected_fraction", "val/mAP"):
        logged = [(event.step, event.value) for event in events.Scalars(name)]
        assert [step for step, _ in logged] == [step for step, _ in scalars[name]]
        np.testing.assert_allclose([value for _, value in logged], [value for _, value in scalars[name]], rtol=1e-6)
        assert f"| {name.removeprefix('train/')} | {scalars[name][-1][1]:.4f} |" in report or name == "val/mAP"
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 9))
    assert [value for _, value in scalars["val/mAP"]] == pytest.approx([epoch["val_mAP"] for epoch in metrics["epochs"]])

    # the rejected fraction stayed 0 in this run (one epoch after the warm-up): its panel is left out
    assert {value for _, value in scalars["train/rejected_fraction"]} == {0.0}
    assert "Zero throughout, not drawn: rejected fraction." in report
    assert "end of the warm-up (method.warm_up=1 epochs, step 4)" in report
    pictures = {"val_map.png": (800, 300), "losses.png": (800, 300), "thresholds.png": (800, 300),
                "per_class_ap.png": (800, 190), "ignore_image_cam_masked.png": (610, 1245)}  # 8 images, 3 panels
    for name, size in pictures.items():
        with Image.open(finished_run / "report" / name) as image:
            assert image.size == size, name
        assert f"(report/{name})" in report
    assert f"(`train_seconds` in metrics.json: {metrics['train_seconds']})" in report and "  warm_up: 1\n" in report
    # each bar's length in pixels, read back from the PNG, is its class's test AP (axes 0-100 at bar_axes), the
    # best class on top
    with Image.open(finished_run / "report" / "per_class_ap.png") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    width, height = (inches * DPI for inches in bar_figure_size(4))
    left, bottom, axes_width, axes_height = bar_axes(4)
    blue = np.all(np.abs(pixels - [0x1F, 0x77, 0xB4]) <= 2, axis=2)
    for rank, ap in enumerate(sorted(test["per_class_AP"], reverse=True)):
        row = int(height * (1 - bottom - axes_height * (1 - (rank + 0.5) / 4)))  # pixel rows count from the top
        columns = np.flatnonzero(blue[row])
        bar_end = columns.max() + 1 if len(columns) else width * left
        measured = (bar_end - width * left) / (width * axes_width) * 100
        assert measured == pytest.approx(ap, abs=1.0), rank


def test_another_tracker_or_none_leaves_the_report_and_a_bad_one_is_one_line(tiny_dataset, tmp_path):
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", "train.tracker=none", "train.epochs=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "report" / "ignore_image_cam_masked.png").is_file()
    assert "| 0 |" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(SPMLError) as error:
        trackers("papyrus", tmp_path)
    assert str(error.value) == ("train.tracker 'papyrus' is not one of ('tensorboard', 'none', 'aim', 'wandb', "
                                "'trackio', 'comet_ml', 'mlflow', 'clearml', 'dvclive', 'swanlab')")
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(SPMLError, match=r"^train.tracker=wandb: the wandb package is not installed"):
            trackers("wandb", tmp_path)


def test_tensorboard_holds_the_hyperparameters_with_their_metrics_the_speed_and_the_gradient_norm(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    from ignore.config import valid_keys
    from ignore.training.tracking import HPARAM_METRICS, read_scalars

    assert [path.name for path in (finished_run / "tensorboard").iterdir() if path.is_dir()] == []  # one run
    events = EventAccumulator(str(finished_run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    hparams = events.PluginTagToContent("hparams")
    experiment = metadata.parse_experiment_plugin_data(hparams[metadata.EXPERIMENT_TAG])
    session = metadata.parse_session_start_info_plugin_data(hparams[metadata.SESSION_START_INFO_TAG])
    ended = metadata.parse_session_end_info_plugin_data(hparams[metadata.SESSION_END_INFO_TAG])
    assert set(session.hparams) == set(valid_keys()) and ended.status == api_pb2.STATUS_SUCCESS
    assert session.hparams["method.warm_up"].number_value == 1
    assert session.hparams["train.tracker"].string_value == "tensorboard"
    # the HParams tab shows each metric's last value in the same run
    assert tuple(info.name.tag for info in experiment.metric_infos) == HPARAM_METRICS
    last = {tag: events.Scalars(tag)[-1].value for tag in HPARAM_METRICS}
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert last["val/best_mAP"] == pytest.approx(metrics["best_val_mAP"])
    assert last["val/mAP"] == pytest.approx(metrics["epochs"][-1]["val_mAP"])
    for name in ("mAP", "CF1", "OF1"):
        assert last[f"test/{name}"] == pytest.approx(metrics["test"][name])
    assert last["val/bce"] > 0
    for index, ap in enumerate(metrics["test"]["per_class_AP"]):
        assert events.Scalars(f"test_AP/class{index}")[-1].value == pytest.approx(ap)
    (command,) = events.Tensors("command/text_summary")
    assert command.tensor_proto.string_val[0].decode().startswith("`ignore-train data.path=")

    # at every step (train.log_every=1): the scaled learning rate of each group (lr 0.001 x 8 / 16, the head 10
    # times faster), the gradient norm, and 8 images a step
    names = ("lr/trunk", "lr/head", "train/grad_norm", "speed/images_per_second", "speed/seconds_per_step")
    logged = {name: [(event.step, event.value) for event in events.Scalars(name)] for name in names}
    steps = list(range(1, 9))
    for name, lr in (("lr/trunk", 0.0005), ("lr/head", 0.005)):
        assert logged[name] == [(step, pytest.approx(lr)) for step in steps]
    assert [step for step, _ in logged["train/grad_norm"]] == steps
    assert all(0 < norm < 100 for _, norm in logged["train/grad_norm"])
    assert logged["train/grad_norm"] == [(step, pytest.approx(norm)) for step, norm in read_scalars(finished_run)[
        "train/grad_norm"]]
    for (step, per_second), (_, per_step) in zip(logged["speed/images_per_second"], logged["speed/seconds_per_step"]):
        assert per_second * per_step == pytest.approx(8, rel=1e-5)


def test_the_exports_card_and_config_name_the_runs_metrics_and_command(finished_run, tiny_dataset):
    test = json.loads((finished_run / "metrics.json").read_text())["test"]
    card = (finished_run / "export" / "README.md").read_text()
    assert f"| test | {test['mAP']:.2f} | {test['CF1']:.2f} | {test['OF1']:.2f} |" in card
    assert (f"| test, at the decision thresholds | {test['mAP']:.2f} | {test['CF1_val_thresholds']:.2f} | "
            f"{test['OF1_val_thresholds']:.2f} |") in card
    assert f"ignore-train data.path={tiny_dataset} data.image_size=32" in card
    config = json.loads((finished_run / "export" / "config.json").read_text())
    assert config["test"]["per_class_AP"] == test["per_class_AP"] and config["export_version"] == 2
    assert config["training"]["config"]["method"]["warm_up"] == 1
