"""SIGTERM, what a cluster scheduler sends before it preempts a job: checkpoint at the next step and stop.

A preempted run exits with PREEMPTED (143, the code of a process that SIGTERM ended) after one line naming its
checkpoint, so that a script or scheduler sees that it did not finish; `train.resume=auto` continues it.
"""
import signal

import torch
import torch.distributed as dist

PREEMPTED = 128 + signal.SIGTERM


class StopOnSigterm:
    """Inside `with`, SIGTERM sets a flag instead of ending the process; `agreed()` at each step boundary
    says whether any process received it, the same answer on every process, so all stop at the same step."""

    def __init__(self, accelerator):
        self.received = self.stopping = False
        # the flag goes over a CPU (gloo) group: an all-reduce per step without a host-device synchronisation
        self.group = dist.new_group(backend="gloo") if accelerator.num_processes > 1 else None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGTERM, self.receive)
        return self

    def __exit__(self, *exception):
        signal.signal(signal.SIGTERM, self.previous)  # during the test a SIGTERM ends the run again

    def receive(self, signum, frame):
        self.received = True

    def agreed(self):
        if self.group is None:
            self.stopping = self.received
        else:
            flag = torch.tensor([int(self.received)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            self.stopping = bool(flag.item())
        return self.stopping

