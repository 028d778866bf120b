"""Resume after a crash: the same weights as an unbroken run, and damaged or unusable checkpoints."""
import shutil

import pytest
from safetensors.torch import load_file, save_file

from ignore.training.checkpoint import resolve_resume
from ignore.errors import SPMLError
from training_runs import assert_same_state, final_state, logged_lines, run_train, tiny_run_overrides


@pytest.fixture(scope="module")
def straight_run(tiny_dataset, tmp_path_factory):
    """The tiny run without a break, loading with 2 worker processes: what a resumed run must reproduce."""
    run_dir = tmp_path_factory.mktemp("straight")
    result = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "data.num_workers=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_resume_mid_epoch_and_worker_count_give_the_same_weights_and_thresholds(tiny_dataset, straight_run, tmp_path):
    # 32 train images / batch 8 = 4 steps an epoch, 8 in all; the broken run stops at step 3.
    # The straight run loads with 2 worker processes, the broken one in the main process:
    # the random views depend on (seed, epoch, row) only, so the weights must still agree.
    broken = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "broken", "train.max_steps=3"))
    assert broken.returncode == 0, broken.stderr[-3000:]
    assert (tmp_path / "broken" / "checkpoints" / "step-000000003").is_dir()
    resumed = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "broken", "train.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    # the resumed run's lines go after the broken run's in train.log
    assert logged_lines(tmp_path / "broken") == broken.stdout.splitlines() + resumed.stdout.splitlines()
    assert broken.stdout.splitlines()[-1] == "stopped at step 3 before the first evaluation; no test run"

    straight = final_state(straight_run)
    assert straight[0] == "step-000000008"
    assert straight[2]["thresholds.gap_threshold"] != 0  # it moved (the signed drop can average below 0)
    assert_same_state(final_state(tmp_path / "broken"), straight)


def test_non_finite_weights_are_never_checkpointed_and_the_newest_finite_checkpoint_resumes(tiny_dataset, tmp_path):
    # lr 1e30: Adam's first step leaves finite weights of ~1e30, the second forward overflows and
    # step 2 leaves NaN weights. A checkpoint is due every step, the loss is checked only at step 10.
    blown_up = ("optim.lr=1e30", "train.checkpoint_every_steps=1", "train.keep_checkpoints=1", "train.log_every=10")
    reference = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "reference", *blown_up, "train.max_steps=1"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "run"
    stopped = run_train(*tiny_run_overrides(tiny_dataset, run_dir, *blown_up))
    assert stopped.returncode == 2
    assert stopped.stderr.strip().splitlines()[-1].startswith(
        "error: non-finite weights or statistics at step 2, not checkpointed: trunk.conv1.weight, ")
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["step-000000001"]
    assert_same_state(final_state(run_dir), final_state(tmp_path / "reference"))

    resumed = run_train(*tiny_run_overrides(tiny_dataset, run_dir, *blown_up, "train.resume=auto"))
    assert f"resumed from {run_dir / 'checkpoints' / 'step-000000001'}: epoch 0, step 1" in resumed.stdout
    assert resumed.stderr.strip().splitlines()[-1] == stopped.stderr.strip().splitlines()[-1]


def damage(file, how):
    data = file.read_bytes()
    if how == "deleted":
        file.unlink()
    else:
        file.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint"}[how])


def test_resume_auto_passes_over_a_damaged_checkpoint(tiny_dataset, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    broken = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "train.max_steps=3",
                                           "train.checkpoint_every_steps=1", "train.keep_checkpoints=3"))
    assert broken.returncode == 0, broken.stderr[-3000:]
    newest = run_dir / "checkpoints" / "step-000000003"
    damage(newest / "model.safetensors", "truncated")
    resumed = run_train(*tiny_run_overrides(tiny_dataset, run_dir, "train.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"checkpoint {newest} is damaged (model.safetensors: Error while deserializing header: "
            "incomplete metadata, file not fully covered); trying the one before") in resumed.stdout
    assert f"resumed from {run_dir / 'checkpoints' / 'step-000000002'}: epoch 0, step 2" in resumed.stdout
    assert_same_state(final_state(run_dir), final_state(straight_run))


@pytest.mark.parametrize("file, how, reason", [
    ("model.safetensors", "truncated", "model.safetensors: Error while deserializing header: incomplete metadata"),
    ("custom_checkpoint_2.pkl", "garbage", "custom_checkpoint_2.pkl: invalid load key, 'n'."),
    ("optimizer.bin", "empty", "optimizer.bin: Ran out of input"),
    ("optimizer.bin", "truncated", "optimizer.bin: PytorchStreamReader failed reading zip archive"),
    ("custom_checkpoint_1.pkl", "deleted", "custom_checkpoint_1.pkl is missing"),
])
def test_resume_from_a_damaged_checkpoint_path_is_one_error_line(tiny_dataset, straight_run, tmp_path, file, how,
                                                                 reason):
    checkpoint = tmp_path / "step-000000008"
    shutil.copytree(straight_run / "checkpoints" / checkpoint.name, checkpoint)
    damage(checkpoint / file, how)
    with pytest.raises(SPMLError) as error:
        resolve_resume(str(checkpoint), tmp_path, print, custom_objects=3)
    assert str(error.value).startswith(f"train.resume: checkpoint {checkpoint} is damaged ({reason}")
    assert "\n" not in str(error.value)
    if how in ("empty", "deleted"):  # the same through train.py
        result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", f"train.resume={checkpoint}"))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == f"error: train.resume: checkpoint {checkpoint} is damaged ({reason})"


def test_resume_from_a_checkpoint_of_another_model_is_one_error_line(tiny_dataset, straight_run, tmp_path):
    # a checkpoint written before the trunks took torchvision's layer names: positional names
    checkpoint = tmp_path / "step-000000008"
    shutil.copytree(straight_run / "checkpoints" / checkpoint.name, checkpoint)
    weights = load_file(str(checkpoint / "model.safetensors"))
    save_file({name.replace("trunk.conv1.", "trunk.0."): value for name, value in weights.items()},
              str(checkpoint / "model.safetensors"))
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "run", f"train.resume={checkpoint}"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: train.resume: checkpoint {checkpoint} holds the weights of another model (missing "
        "['trunk.conv1.weight'], unexpected ['trunk.0.weight']); resume with the model settings and trainer "
        "version that wrote it, or start afresh")


def test_resume_auto_with_every_checkpoint_damaged_is_one_error_line(straight_run, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(straight_run / "checkpoints", root)
    for checkpoint in root.iterdir():
        damage(checkpoint / "custom_checkpoint_2.pkl", "empty")
    said = []
    with pytest.raises(SPMLError) as error:
        resolve_resume("auto", tmp_path, said.append)
    assert str(error.value) == f"train.resume=auto: all 2 checkpoints in {root} are damaged"
    assert said == [f"checkpoint {root / name} is damaged (custom_checkpoint_2.pkl: Ran out of input); "
                    "trying the one before" for name in ("step-000000008", "step-000000004")]
