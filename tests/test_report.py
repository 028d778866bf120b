"""The run report on a hand-written run folder: a method without thresholds or pictures, a resumed log."""
import json

from ignore.training.report import write_report
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
                        "per_class_AP": [40.0, 60.0]}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path, ["cat", "dog"], {})
    report = (tmp_path / "report.md").read_text()
    assert "| 50.00 | 10.00 | 12.50 |" in report and "| 0 | 41.00 |" in report and "| loss | 0.7000 |" in report
    assert "chosen on the validation split and used by `ignore-predict`: CF1 30.00, OF1 32.50." in report
    assert "| dog | 60.00 |" in report and "IGNORE's thresholds" not in report
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == ["losses.png", "per_class_ap.png",
                                                                            "val_map.png"]
