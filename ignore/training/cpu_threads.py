"""The CPU threads of a one-process `accelerate launch` on a CPU.

Accelerate's launcher (accelerate/commands/launch.py) gives the script OMP_NUM_THREADS =
--num_cpu_threads_per_process, which defaults to the launcher's own OMP_NUM_THREADS, else 1
(more only with --cpu, and then the physical cores). So a plain `accelerate launch train.py`
on a CPU trains on one thread. The launcher records nothing of it, but it is the parent
process, and on Linux /proc/<parent>/environ and cmdline show what the user gave it.
"""
import os
from pathlib import Path

import torch

from .console import say

THREADS_OPTION = "--num_cpu_threads_per_process"


def use_all_cores_if_launcher_chose_one(accelerator):
    """One process on a CPU, OMP_NUM_THREADS=1 set by the launcher and not by the user: use every core."""
    if accelerator.num_processes != 1 or accelerator.device.type != "cpu":
        return
    parent = Path("/proc") / str(os.getppid())
    try:
        parent_environ = dict(entry.split("=", 1) for entry in
                              (parent / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in entry)
        parent_argv = (parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # not Linux, or the parent has gone: leave the threads as they are
        return
    if launcher_chose_one_thread(os.environ, parent_environ, parent_argv):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        say(f"{torch.get_num_threads()} CPU threads (accelerate launch had set OMP_NUM_THREADS=1 "
            f"itself; set OMP_NUM_THREADS or {THREADS_OPTION} to choose)")


def launcher_chose_one_thread(environ, parent_environ, parent_argv):
    """Whether OMP_NUM_THREADS=1 in `environ` came from Accelerate's launcher's default.

    ACCELERATE_DYNAMO_BACKEND is set by the launcher in every script it starts.
    """
    return (environ.get("OMP_NUM_THREADS") == "1" and "ACCELERATE_DYNAMO_BACKEND" in environ
            and "OMP_NUM_THREADS" not in parent_environ
            and not any(argument.startswith(THREADS_OPTION) for argument in parent_argv))
