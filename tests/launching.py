"""Real launches for the tests: `accelerate launch` of 2 CPU processes over gloo."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWO_CPU_PROCESSES = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", "0")  # a free port: launches may run side by side


def run_worker(script, *args, processes=2):
    """Run tests/<script> on 2 launched processes (or alone with processes=1); it must succeed."""
    launcher = TWO_CPU_PROCESSES if processes == 2 else (sys.executable,)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, str(REPO / "tests" / script), *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
