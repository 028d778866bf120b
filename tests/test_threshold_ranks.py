"""IGNORE's thresholds under a real 2-process launch: bitwise equal on both ranks and
equal to one process that sees the whole global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_thresholds_match_across_ranks_and_the_single_process_computation(tmp_path):
    out = tmp_path / "thresholds.json"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO / "tests" / "threshold_ranks_worker.py"), str(out)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(out.read_text())
    rank0, rank1 = values["ranks"]
    assert rank0 == rank1  # the same bits (hex floats) on both ranks
    assert values["rank0"][0] > 0
    assert values["rank0"] == pytest.approx(values["single_process"], abs=1e-6)
