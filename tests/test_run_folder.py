"""One run folder, one run: a fresh run never mixes with the run already in its folder."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from ignore.config import load_config, save_config
from ignore.errors import SPMLError
from ignore.train import main
from ignore.training.resume_settings import require_same_settings
from ignore.training.run_folder import LOCK
from training_runs import PYTHON, REPO, logged_lines, run_train, tiny_run_overrides

# 32 train images / batch 8 = 4 steps: one epoch, its checkpoint, the export, metrics.json and the report
FINISHED = ("train.epochs=1", "optim.scheduler=onecycle")


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished")
    result = run_train(*tiny_run_overrides(tiny_dataset, run_dir, *FINISHED))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def files_and_times(folder):
    """Every file's time, but the lock's: a refused resume takes the lock before it compares settings."""
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.name != LOCK}


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
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock", "checkpoints", "config.yaml", "scalars.jsonl",
                                                               "train.log"]
    assert logged_lines(run_dir) == result.stdout.splitlines()  # the old run's lines are gone
    steps = {json.loads(line)["step"] for line in (run_dir / "scalars.jsonl").read_text().splitlines()}
    assert steps == {1}


def test_resume_with_other_settings_names_every_one_that_may_not_change(finished_run, tiny_dataset, capsys):
    before = files_and_times(finished_run)
    checkpoint = finished_run / "checkpoints" / "step-000000004"
    # log_every, num_workers and max_steps may change; the method, lr and image size may not
    with pytest.raises(SystemExit) as stopped:
        main(tiny_run_overrides(tiny_dataset, finished_run, *FINISHED, "train.resume=auto", "method.name=an",
                                "optim.lr=0.5", "data.image_size=40", "train.log_every=5", "data.num_workers=1",
                                "train.max_steps=6"))
    assert stopped.value.code == 2
    assert last_error_line(capsys) == (
        f"error: train.resume: checkpoint {checkpoint} was trained with other settings: data.image_size 32 -> 40, "
        "method.name 'ignore' -> 'an', optim.lr 0.001 -> 0.5; resume with its settings (docs/configuration.md "
        "lists those that may change) or start a fresh run")
    assert files_and_times(finished_run) == before


def test_more_epochs_with_a_one_cycle_schedule_is_refused_in_one_line(finished_run, tiny_dataset, capsys):
    # the schedule's 4 steps are spent: a 5th used to end in OneCycleLR's "Tried to step 5 times" traceback
    with pytest.raises(SystemExit) as stopped:
        main(tiny_run_overrides(tiny_dataset, finished_run, "optim.scheduler=onecycle", "train.epochs=2",
                                "train.resume=auto"))
    assert stopped.value.code == 2
    assert last_error_line(capsys) == (
        "error: train.resume: train.epochs 1 -> 2 with optim.scheduler=onecycle: the one-cycle schedule is laid out "
        "over the run's first total of steps and cannot be stretched; resume with train.epochs=1")


def test_a_checkpoint_without_its_config_is_compared_with_its_run_folders(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000000004"
    checkpoint.mkdir(parents=True)
    save_config(load_config(overrides=["optim.lr=0.01", "train.epochs=3"]), tmp_path / "run" / "config.yaml")
    require_same_settings(checkpoint, load_config(overrides=["optim.lr=0.01", "train.epochs=5"]))  # may change
    with pytest.raises(SPMLError, match=r"other settings: optim.lr 0.01 -> 0.001; "):
        require_same_settings(checkpoint, load_config())


def test_resume_with_another_global_batch_is_refused_in_one_line(finished_run, tiny_dataset, capsys):
    # train.batch_size may change with the number of processes, the global batch may not (one process: 8 -> 4)
    with pytest.raises(SystemExit) as stopped:
        main(tiny_run_overrides(tiny_dataset, finished_run, *FINISHED, "train.batch_size=4", "train.resume=auto"))
    assert stopped.value.code == 2
    assert last_error_line(capsys) == (
        f"error: train.resume: checkpoint {finished_run / 'checkpoints' / 'step-000000004'} was trained with a global "
        "batch of 8, this run's is 4 (train.batch_size x processes x gradient accumulation); keep the global batch, "
        "or start a fresh run")


def logged_steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "scalars.jsonl").read_text().splitlines()
            if "train/loss" in line]


def test_a_second_run_meanwhile_is_refused_sigterm_checkpoints_and_resume_continues(tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    settings = tiny_run_overrides(tiny_dataset, run_dir, "train.epochs=50", "data.num_workers=2")  # never finishes
    # its own session, signalled as a scheduler does a job: every process, the DataLoader workers too
    training = subprocess.Popen([PYTHON, "-m", "ignore.train", *settings], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                start_new_session=True)
    deadline = time.monotonic() + 300
    while not ((run_dir / "scalars.jsonl").is_file() and logged_steps(run_dir)):  # the first step is done
        assert training.poll() is None and time.monotonic() < deadline, training.communicate()[1][-3000:]
        time.sleep(0.05)
    # a second run into the folder meanwhile (a resume: a fresh one would first meet the first run's files)
    with pytest.raises(SystemExit) as refused:
        main(tiny_run_overrides(tiny_dataset, run_dir, "train.epochs=50", "train.resume=auto"))
    assert refused.value.code == 2
    assert last_error_line(capsys) == (
        f"error: train.output_dir {run_dir}: another run (process {training.pid} on {socket.gethostname()}) is "
        "training into it now; wait for it to end, or choose another train.output_dir")
    os.killpg(training.pid, signal.SIGTERM)
    out, err = training.communicate(timeout=300)
    assert training.returncode == 143, err[-3000:]
    said = re.fullmatch(r"stopped by SIGTERM at step (\d+): checkpoint (.+); continue with train.resume=auto",
                        out.strip().splitlines()[-1])
    assert said, out[-2000:]
    step = int(said[1])
    assert said[2] == str(run_dir / "checkpoints" / f"step-{step:09d}") and (run_dir / said[2]).is_dir()
    assert max(logged_steps(run_dir)) == step and "Traceback" not in err

    resumed = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "train.epochs=50", "train.resume=auto",
                                            f"train.max_steps={step + 1}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {said[2]}: epoch {step // 4}, step {step}" in resumed.stdout
    assert sorted(set(logged_steps(run_dir))) == list(range(1, step + 2))  # no step lost, none after step + 1
    assert (run_dir / "checkpoints" / f"step-{step + 1:09d}").is_dir()
