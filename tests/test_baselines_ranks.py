"""The baselines' per-image state under a real 2-process launch: bitwise the same on both ranks."""
import json

import numpy as np
import torch

from baselines_ranks_worker import TEACHER_LABELS
from ignore.losses.noisy_oracle import NoisyOracle
from launching import run_worker


def test_per_image_state_is_identical_on_both_ranks_and_holds_the_other_ranks_rows(tmp_path):
    out = tmp_path / "state.json"
    run_worker("baselines_ranks_worker.py", out)
    values = json.loads(out.read_text())

    # row 1 came from both ranks: rank 0's values win, on both; row 3 from rank 0 only
    expected = [[0, 0], [11.0, 11.5], [0, 0], [10.0, 10.5], [0, 0]]
    assert values["shared"] == [expected, expected]

    for name in ("role", "ll_cp", "em_apl", "vlpl"):
        rank0, rank1 = values[name]["ranks"]
        assert rank0 == rank1, name
    # vlpl's teacher table: every row scored by one rank or the other, on both, as one process scores them
    oracle = NoisyOracle(TEACHER_LABELS, 0.5).scores_of_rows(torch.arange(16))
    assert values["first_13_rows"] == oracle[:13].tolist()
    assert values["vlpl"]["buffers"]["teacher_scores"] == oracle.double().tolist()
    assert not np.isnan(np.load(tmp_path / "teacher_scores" / "noisy_oracle-0.5-ranks.npy")).any()
    role = values["role"]["buffers"]
    rows_of_rank1 = values["role"]["rows_seen_by_rank1"]
    assert all(role["visits"][row] > 0 for row in rows_of_rank1)  # rank 0's copy holds rank 1's updates
    assert sum(role["visits"]) == 3 * 32  # every image of every step counted once: 3 epochs of 32 images
    corrected = values["ll_cp"]["buffers"]["corrected"]
    assert sum(map(sum, corrected)) > 0
    assert sum(map(sum, values["em_apl"]["buffers"]["pseudo_negative"])) > 0

    # train.row_state_dir: the same state bit for bit, on both ranks, from tables mapped from files
    for name in ("role", "ll_cp", "em_apl"):
        mapped = values[f"{name}_mapped"]
        assert mapped["ranks"] == values[name]["ranks"], name
        tables = {key for key, value in values[name]["buffers"].items() if isinstance(value, list) and len(value) == 16}
        assert {key for key, is_mapped in mapped["mapped"].items() if is_mapped} == tables, name
    # one copy a machine: the value rank 1 wrote alone, both ranks read; no file is left in the folder
    table = [[0.0, 1.0], [2.0, 3.0], [4.0, 99.0]]
    assert values["written_by_rank1"] == [table, table]
    assert values["files_left"] == []
