"""One run folder, one run: a fresh run never mixes with the run already in its folder."""
import json
import shutil

import pytest

from ignore.train import main
from test_train import run_train, tiny_run_overrides

# 32 train images / batch 8 = 4 steps: one epoch, its checkpoint, the export, metrics.json and the report
FINISHED = ("train.epochs=1", "optim.scheduler=onecycle")


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished")
    result = run_train(*tiny_run_overrides(tiny_dataset, run_dir, *FINISHED))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def files_and_times(folder):
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


def last_error_line(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_fresh_run_into_another_runs_folder_stops_before_writing_anything(finished_run, tiny_dataset, capsys):
    before = files_and_times(finished_run)
    with pytest.raises(SystemExit) as stopped:
        main(tiny_run_overrides(tiny_dataset, finished_run, *FINISHED))
    assert stopped.value.code == 2
    assert last_error_line(capsys) == (
        f"error: train.output_dir {finished_run} holds another run (checkpoints/, export/, metrics.json): continue it "
        "with train.resume=auto, replace it with train.overwrite=true, or choose another train.output_dir")
    assert files_and_times(finished_run) == before


def test_overwrite_replaces_the_previous_runs_outputs(finished_run, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    assert {"export", "metrics.json", "report.md", "tensorboard"} <= {path.name for path in run_dir.iterdir()}
    # keep 1: the old run's step-000000004 used to outrank and prune the new run's first checkpoint
    result = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "train.overwrite=true", "train.max_steps=1",
                                           "train.keep_checkpoints=1", "train.tracker=none"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["step-000000001"]
    assert sorted(path.name for path in run_dir.iterdir()) == ["checkpoints", "config.yaml", "scalars.jsonl"]
    steps = {json.loads(line)["step"] for line in (run_dir / "scalars.jsonl").read_text().splitlines()}
    assert steps == {1}
