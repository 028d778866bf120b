"""The stateful baselines through train.py: resume, on one process or two, restores their per-image state, two
processes keep it identical (vlpl's teacher table too), and BoostLU's export scores as its evaluation does."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ignore.data.format import load_dataset
from ignore.data.views import eval_view
from ignore.inference import load_export, predict_probabilities
from ignore.losses.noisy_oracle import NoisyOracle
from training_runs import TWO_PROCESSES, assert_same_state, final_state, run_train, tiny_run_overrides

# ll_delta_rel 10: from the second epoch, 10% of a batch's entries are corrected
STATEFUL = {"role": ["method.name=role"], "ll_cp": ["method.name=ll_cp", "method.ll_delta_rel=10"]}
BUFFERS = {"role": "estimate_logits", "ll_cp": "corrected"}
EVERY_TWO_STEPS = ("train.checkpoint_every_steps=2", "train.keep_checkpoints=2")  # steps 6 and 8 kept


def resume_at_step_6(tmp_path):
    return f"train.resume={tmp_path / 'straight' / 'checkpoints' / 'step-000000006'}"


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_resume_mid_epoch_on_one_process_or_two_keeps_the_per_image_state(tiny_dataset, tmp_path, name):
    # 32 train images / batch 8 = 4 steps an epoch; the unbroken run's step-6 checkpoint (in the second epoch),
    # resumed into other folders, stands for a run stopped there. On one process it ends bit for bit where the
    # unbroken run does; on two processes of batch 4 (the same global batch), steps 7 and 8 read positions 16..31
    # of epoch 1's order, so the state moves on those dataset rows only, identically on both ranks.
    straight = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "straight", *STATEFUL[name], *EVERY_TWO_STEPS))
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "broken", *STATEFUL[name],
                                            resume_at_step_6(tmp_path)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 1, step 6" in resumed.stdout
    expected = final_state(tmp_path / "straight")
    assert expected[0] == "step-000000008"
    state = expected[2][BUFFERS[name]]
    assert state.shape == (32, 4)
    if name == "ll_cp":
        assert 0 < state.sum() < state.numel()  # some corrections were made, and kept
    else:
        assert (expected[2]["visits"] == 2).all()  # every row visited once an epoch
    assert_same_state(final_state(tmp_path / "broken"), expected)

    two = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "two", *STATEFUL[name], "train.batch_size=4",
                                        resume_at_step_6(tmp_path)), launcher=TWO_PROCESSES)
    assert two.returncode == 0, two.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["thresholds_identical_across_ranks"] is True  # every method buffer, compared bit for bit
    after = final_state(tmp_path / "two")[2]
    if name == "role":
        assert (after["visits"] == 2).all()  # the rows of steps 7 and 8, both ranks', visited a second time
        return
    before = state_at(tmp_path / "straight", "step-000000006")["corrected"]
    assert before.any() and (after["corrected"] & before).equal(before)  # every earlier correction kept
    last_rows = torch.randperm(32, generator=torch.Generator().manual_seed(0 + 1))[16:].tolist()  # seed 0, epoch 1
    new_rows = sorted(set((after["corrected"] & ~before).nonzero()[:, 0].tolist()))
    assert new_rows and set(new_rows) <= set(last_rows)


def state_at(run_dir, checkpoint):
    """The method's buffers in one checkpoint of a run."""
    return torch.load(run_dir / "checkpoints" / checkpoint / "custom_checkpoint_1.pkl", weights_only=True)


def test_tables_in_files_resume_to_the_state_of_an_uninterrupted_run_in_memory(tiny_dataset, tmp_path):
    # train.row_state_dir: em_apl (float and bool tables, labelled before step 5) resumed from the step-6
    # checkpoint of a run in memory, its tables now mapped from files, and checkpointed from them; the checkpoint
    # holds their contents, not the files (none is left). role and ll_cp in files: test_baselines_ranks.py
    settings = ["method.name=em_apl"]
    tables = tmp_path / "tables"
    straight = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "straight", *settings, *EVERY_TWO_STEPS))
    assert straight.returncode == 0, straight.stderr[-3000:]
    result = run_train(*tiny_run_overrides(tiny_dataset, tmp_path / "broken", *settings, resume_at_step_6(tmp_path),
                                           f"train.row_state_dir={tables}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tables.iterdir()) == []
    expected = final_state(tmp_path / "straight")
    assert expected[2]["labelled_epoch"] == 1 and 0 < expected[2]["pseudo_negative"].sum() < 32 * 4
    assert_same_state(final_state(tmp_path / "broken"), expected)


def test_two_processes_share_vlpls_teacher_table(tiny_dataset, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, dataset)  # vlpl caches its teacher's scores beside the dataset
    result = run_train(*tiny_run_overrides(dataset, tmp_path / "ddp", "method.name=vlpl", "method.teacher=noisy_oracle",
                                           "train.batch_size=4"), launcher=TWO_PROCESSES)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    last_epoch = metrics["last_epoch_train"]
    assert metrics["thresholds_identical_across_ranks"] is True  # every method buffer, compared bit for bit
    # the teacher's table, as one process scores it, and the pseudo-positives it gave
    labels = load_dataset(dataset).splits["train"]["labels"]
    teacher_scores = final_state(tmp_path / "ddp")[2]["teacher_scores"]
    assert torch.equal(teacher_scores, NoisyOracle(labels, 0.5).scores_of_rows(torch.arange(32)))
    assert last_epoch["flagged"] > 0 and 0 <= last_epoch["fn_precision"] <= 1
    assert len(list((dataset / "teacher_scores").glob("noisy_oracle-0.5-*.npy"))) == 1


def test_boostlu_export_reproduces_the_boosted_test_scores(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    result = run_train(*tiny_run_overrides(tiny_dataset, run, "method.name=boostlu", "train.epochs=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "export" / "config.json").read_text())["positive_cam_boost"] == 5.0
    model = load_export(run / "export")
    data = load_dataset(tiny_dataset)
    images = [Image.open(data.image_root / name) for name in data.splits["test"]["image"]]
    probabilities = predict_probabilities(model, images).numpy()
    np.testing.assert_allclose(probabilities, np.load(run / "test_scores.npy"), atol=1e-5)
    # so few steps leave every CAM value negative, where the boost changes nothing: shift the head's
    # bias so that about half are positive; the exported model must then score with the boosted logits
    info = model.export_info
    view = eval_view(info["image_size"], {"mean": info["mean"], "std": info["std"]})
    inputs = torch.stack([view(image.convert("RGB")) for image in images])
    with torch.no_grad():
        model.network.head.bias -= model(inputs)["cam"].median()
        output = model.network(inputs)  # the network's own, unboosted logits
    assert (output["cam"] > 0).any() and (output["cam"] < 0).any()
    boosted = torch.sigmoid(torch.where(output["cam"] > 0, 5 * output["cam"], output["cam"]).mean(dim=(2, 3)))
    np.testing.assert_allclose(predict_probabilities(model, images).numpy(), boosted.numpy(), atol=1e-6)
    with torch.no_grad():  # the exported classifier's own forward scores with the boost too
        np.testing.assert_allclose(torch.sigmoid(model(inputs)["logits"]).numpy(), boosted.numpy(), atol=1e-6)
    assert (boosted - torch.sigmoid(output["logits"])).abs().max() > 1e-3  # the boost changes the scores
