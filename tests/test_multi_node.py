"""accelerate_configs/multi_node.yaml for real: two launches on this host as two machines of one process each,
over gloo on the CPU. IGNORE's thresholds and the weights are bit for bit the same on both machines, and a run
resumed from its step-2 checkpoint on the same two machines ends with the weights of a run that was not stopped."""
import json

from launching import run_two_machines
from training_runs import assert_same_state, final_state, tiny_run_overrides


def two_machine_run(dataset, output_dir, *extra):
    # 32 train images, 4 a process and 2 processes a step: 4 steps, IGNORE rejecting from the first (no warm-up)
    overrides = tiny_run_overrides(dataset, output_dir, "train.batch_size=4", "train.epochs=1", "method.warm_up=0",
                                   "train.tracker=none", *extra)
    return run_two_machines("-m", "ignore.train", *overrides)


def test_two_machines_agree_bit_for_bit_and_a_resumed_run_ends_where_an_unbroken_one_does(tiny_dataset, tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    two_machine_run(tiny_dataset, unbroken, "train.checkpoint_every_steps=2", "train.keep_checkpoints=2")
    # the run "broken" at step 2: its checkpoint, resumed into another folder (two trainings, not three)
    step2 = unbroken / "checkpoints" / "step-000000002"
    machine0, machine1 = two_machine_run(tiny_dataset, broken, f"train.resume={step2}")
    assert f"resumed from {step2}: epoch 0, step 2" in machine0.stdout
    assert machine1.stdout == ""  # the main process, on machine 0, says every line

    for run in (unbroken, broken):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["num_processes"] == 2
        # after the last step, compared bit for bit: every method buffer, every weight and BatchNorm statistic
        assert metrics["thresholds_identical_across_ranks"] is True
        assert metrics["weights_identical_across_ranks"] is True
    straight = final_state(unbroken)
    assert straight[0] == "step-000000004"
    assert straight[2]["thresholds.gap_threshold"] != 0 and straight[2]["thresholds.avg_threshold"].abs().min() > 0
    assert_same_state(final_state(broken), straight)  # tensor by tensor, bitwise
