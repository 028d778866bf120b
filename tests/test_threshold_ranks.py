"""Under a real 2-process launch: IGNORE's thresholds bitwise equal on both ranks and equal to one process that
sees the whole global batch, and identical_across_ranks tells equal bits from unequal ones; a SIGTERM that reaches
one rank stops both at the same step."""
import json

import pytest

from launching import run_worker


def test_thresholds_and_the_preemption_flag_agree_across_ranks(tmp_path):
    out = tmp_path / "thresholds.json"
    run_worker("threshold_ranks_worker.py", out)
    values = json.loads(out.read_text())
    rank0, rank1 = values["ranks"]
    assert rank0 == rank1  # the same bits (hex floats) on both ranks
    assert values["identical_across_ranks"] == [True, False]  # 0.0 on rank 0 and -0.0 on rank 1 differ in a bit
    assert values["rank0"][0] > 0
    assert values["rank0"] == pytest.approx(values["single_process"], abs=1e-6)
    assert values["stopping"] == [[False, True], [False, True]]  # only rank 1 was signalled
