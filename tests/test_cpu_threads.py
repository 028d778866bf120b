"""A one-process `accelerate launch` on a CPU uses every core unless the user chose a thread count."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ignore.training.cpu_threads import launcher_chose_one_thread

REPO = Path(__file__).resolve().parents[1]
LAUNCHED = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO"}
LAUNCHER_ARGV = ["python", "-m", "accelerate.commands.launch", "train.py"]


@pytest.mark.parametrize("environ, parent_environ, parent_argv, expected", [
    (LAUNCHED, {}, LAUNCHER_ARGV, True),  # plain `accelerate launch train.py`
    (LAUNCHED, {"OMP_NUM_THREADS": "1"}, LAUNCHER_ARGV, False),  # the user asked for one thread
    (LAUNCHED, {}, LAUNCHER_ARGV[:-1] + ["--num_cpu_threads_per_process", "1", "train.py"], False),
    (LAUNCHED, {}, LAUNCHER_ARGV[:-1] + ["--num_cpu_threads_per_process=1", "train.py"], False),
    ({**LAUNCHED, "OMP_NUM_THREADS": "4"}, {}, LAUNCHER_ARGV, False),  # the launcher chose more (--cpu)
    ({"OMP_NUM_THREADS": "1"}, {}, ["bash"], False),  # `python train.py` from a shell with OMP_NUM_THREADS=1
])
def test_launcher_chose_one_thread(environ, parent_environ, parent_argv, expected):
    assert launcher_chose_one_thread(environ, parent_environ, parent_argv) is expected


def test_a_plain_accelerate_launch_uses_every_core(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "train.py",
               "data.path=/nonexistent/dataset", f"train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environment, timeout=300)
    assert f"{len(os.sched_getaffinity(0))} CPU threads (accelerate launch had set OMP_NUM_THREADS=1" in result.stdout
    assert "error: /nonexistent/dataset: dataset directory not found" in result.stderr
