"""Under a real 2-process launch: IGNORE's thresholds bitwise equal on both ranks and equal to one process that
sees the whole global batch, and identical_across_ranks tells equal bits from unequal ones; a SIGTERM that reaches
one rank stops both at the same step; the ranks adopt another run's export on a resume together."""
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
    copied = f"the best epoch so far (1): its export copied from {tmp_path / 'other_run' / 'export'}"
    # rank 1 looked after the copy: it used to see the export already there, skip the barrier and hang the launch
    assert values["adopted"] == [[[copied], 1], [[copied], 1]]
    assert json.loads((tmp_path / "this_run" / "export" / "config.json").read_text()) == {"epoch": 1}
