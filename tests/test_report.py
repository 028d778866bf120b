"""The run report on hand-written run folders: a method without thresholds or pictures and a resumed log;
IGNORE's warm-up, false-negative AUROCs, a series of zeros, a picture, the time and the config."""
import json

import torch
from PIL import Image

from ignore.config import load_config, save_config
from ignore.losses.base import Picture
from ignore.training.report import DPI, write_report
from ignore.training.tracking import ScalarLog, read_scalars


def test_a_resumed_log_keeps_the_last_value_of_a_step_and_a_method_without_thresholds_has_no_such_chart(tmp_path):
    log = ScalarLog(tmp_path)
    log.log({"train/loss": 0.9}, step=1)
    log.log({"train/loss": 0.8, "lr/group0": 0.001}, step=2)
    log.log({"train/loss": 0.7}, step=2)  # the resumed run logs step 2 again
    log.log({"val/mAP": 41.0, "note": "not a number"}, step=2)
    assert read_scalars(tmp_path) == {"train/loss": [(1, 0.9), (2, 0.7)], "lr/group0": [(2, 0.001)],
                                      "val/mAP": [(2, 41.0)]}
    metrics = {"method": "an", "num_processes": 1, "best_epoch": 0, "best_val_mAP": 41.0,
               "epochs": [{"epoch": 0, "val_mAP": 41.0}],
               "test": {"mAP": 50.0, "CF1": 10.0, "OF1": 12.5, "CF1_val_thresholds": 30.0, "OF1_val_thresholds": 32.5,
                        "per_class_AP": [40.0, 60.0]}, "train_seconds": 61.4}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    save_config(load_config(), tmp_path / "config.yaml")
    write_report(tmp_path, ["cat", "dog"], {})
    report = (tmp_path / "report.md").read_text()
    assert "| 50.00 | 10.00 | 12.50 |" in report and "| 0 | 41.00 |" in report and "| loss | 0.7000 |" in report
    assert "chosen on the validation split and used by `ignore-predict`: CF1 30.00, OF1 32.50." in report
    assert "| dog | 60.00 |" in report and "IGNORE's thresholds" not in report
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == ["losses.png", "per_class_ap.png",
                                                                            "val_map.png"]


def test_ignores_report_marks_the_warm_up_names_zero_series_and_shows_aurocs_picture_time_and_config(tmp_path):
    log = ScalarLog(tmp_path)
    for step in range(1, 7):  # 2 steps an epoch, 3 epochs; warm-up 2 epochs: it ends at step 4
        log.log({"train/loss": 1.0 / step, "train/loss_reg": 0.0, "train/gap_threshold": 0.1 * step,
                 "train/rejected_fraction": 0.0}, step=step)
        if step % 2 == 0:
            log.log({"val/mAP": 30.0 + step}, step=step)
    epochs = [{"epoch": epoch, "val_mAP": 32.0 + 2 * epoch,
               "train": {"gap_auroc": 0.5 + 0.1 * epoch, "drop_auroc": 0.6 + 0.1 * epoch, "loss": 1.0}}
              for epoch in range(3)]
    metrics = {"method": "ignore", "num_processes": 2, "best_epoch": 2, "best_val_mAP": 36.0, "epochs": epochs,
               "test": {"mAP": 50.0, "CF1": 10.0, "OF1": 12.5, "CF1_val_thresholds": 30.0, "OF1_val_thresholds": 32.5,
                        "per_class_AP": [40.0, 60.0, 20.0]}, "train_seconds": 125.4}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    save_config(load_config(overrides=["method.warm_up=2", "optim.lr=0.02"]), tmp_path / "config.yaml")
    panels = torch.zeros(2, 3, 3, 8, 8)  # 2 images, 3 columns
    picture = Picture(panels, ("image", "CAM", "masked"), [[1], [0, 2]])
    write_report(tmp_path, ["cat", "dog", "bird"], {"ignore/image_cam_masked": picture})
    report = (tmp_path / "report.md").read_text()

    # the drop's AUROC first, beside val mAP
    assert "| epoch | val mAP | drop_auroc | gap_auroc |" in report
    assert "| 0 | 32.00 | 0.600 | 0.500 |" in report and "| 2 | 36.00 | 0.800 | 0.700 |" in report
    assert "end of the warm-up (method.warm_up=2 epochs, step 4)" in report
    # loss_reg and the rejected fraction are 0 at every step: named, not drawn
    assert report.count("Zero throughout, not drawn: ") == 2
    assert "Zero throughout, not drawn: loss_reg." in report
    assert "Zero throughout, not drawn: rejected fraction." in report
    with Image.open(tmp_path / "report" / "thresholds.png") as chart:
        assert chart.size == (8 * DPI, 3 * DPI)  # one panel: the rejected fraction's was left out
    assert "each row's observed label on its left (top to bottom: dog; cat, bird)" in report
    assert "(report/ignore_image_cam_masked.png)" in report
    assert "Training with its validations took 2 min 5 s on 2 process(es)" in report
    assert "```yaml\ndata:\n" in report and "  warm_up: 2\n" in report and "  lr: 0.02\n" in report


def test_an_epoch_without_false_negatives_to_rank_shows_a_dash_for_its_auroc():
    from ignore.training.report import validation_section

    epochs = [{"epoch": 0, "val_mAP": 41.0, "train": {"drop_auroc": None, "logit_auroc": 0.8125}},
              {"epoch": 1, "val_mAP": 43.5, "train": {"drop_auroc": float("nan"), "logit_auroc": 0.75}}]
    table = [line for line in validation_section(epochs) if line.startswith("| ")]
    assert table[1:] == ["| 0 | 41.00 | - | 0.812 |", "| 1 | 43.50 | - | 0.750 |"]
