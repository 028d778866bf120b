"""Real launches for the tests: `accelerate launch` of 2 CPU processes over gloo, on one machine or as two."""
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
TWO_CPU_PROCESSES = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", "0")  # a free port: launches may run side by side
# The shipped two-machine config with this host's values: one process a machine (16 is two machines of 8 GPUs)
# and the first machine's address. Its bf16 is kept: on a CPU it is bf16 autocast.
MULTI_NODE = (sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO / "accelerate_configs" / "multi_node.yaml"), "--num_processes", "2",
              "--main_process_ip", "127.0.0.1")


def run_worker(script, *args, processes=2):
    """Run tests/<script> on 2 launched processes (or alone with processes=1); it must succeed."""
    launcher = TWO_CPU_PROCESSES if processes == 2 else (sys.executable,)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, str(REPO / "tests" / script), *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_two_machines(*args, timeout=180):
    """`accelerate launch` with MULTI_NODE twice on this host, --machine_rank 0 and 1, then `args` (the script or
    -m module, and its arguments); both must succeed. Returns each machine's CompletedProcess. The first launch to
    fail, or both past `timeout` seconds, ends both launches and their workers, and the failure shows its stderr."""
    port = free_port()
    launches, failed = [], None
    with tempfile.TemporaryDirectory() as logs:
        try:
            for machine in (0, 1):
                launches.append(start_machine(machine, port, args, Path(logs)))
            deadline = time.monotonic() + timeout
            while failed is None and time.monotonic() < deadline:
                codes = [launch.poll() for launch in launches]
                if codes == [0, 0]:
                    break
                failed = next((machine for machine, code in enumerate(codes) if code not in (None, 0)), None)
                time.sleep(0.2)
        finally:
            for launch in launches:
                end_launch(launch)
        results = [subprocess.CompletedProcess(launch.args, launch.returncode, Path(logs, f"{machine}.out").read_text(),
                                               Path(logs, f"{machine}.err").read_text())
                   for machine, launch in enumerate(launches)]
    if failed is not None:
        raise AssertionError(f"machine {failed} exited {results[failed].returncode}:\n"
                             f"{results[failed].stderr[-3000:]}")
    if [result.returncode for result in results] != [0, 0]:
        raise AssertionError(f"the two machines ran past {timeout} s; stderr of machine 0:\n"
                             f"{results[0].stderr[-1500:]}\nof machine 1:\n{results[1].stderr[-1500:]}")
    return results


def start_machine(machine, port, args, logs):
    """One machine's launch, its output into files in `logs` (pipes read by nobody could fill and stop it)."""
    command = [*MULTI_NODE, "--machine_rank", str(machine), "--main_process_port", str(port), *map(str, args)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(logs / f"{machine}.out", "w") as stdout, open(logs / f"{machine}.err", "w") as stderr:
        return subprocess.Popen(command, cwd=REPO, env=environment, stdout=stdout, stderr=stderr, text=True)


def free_port():
    """A port free now; both machines are told it before either binds it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def end_launch(launch):
    """Kill a launch that still runs and the workers its torchrun started (in sessions of their own, so a signal to
    the launcher's process group misses them)."""
    if launch.poll() is None:
        workers = psutil.Process(launch.pid).children(recursive=True)
        launch.kill()
        for worker in workers:
            try:
                worker.kill()  # psutil checks that the pid is still this process, not a reused one
            except psutil.NoSuchProcess:
                pass
    launch.wait(timeout=30)
