"""User-facing errors: one line that names the file, row or key, and a non-zero exit."""
import errno
import functools
import json
import os
import sys
import time


class SPMLError(Exception):
    """Bad input from the user (a file, a row, a config key). Printed as one line."""


EXIT_CODE = 2
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
WORKER_PREFIX = f"Caught {SPMLError.__name__} in DataLoader worker process"


def exit_on_error(main):
    """Run `main`; an SPMLError becomes `error: <message>` on stderr and exit code 2.

    Only SPMLError and a full disk are caught: any other exception is a bug and keeps its traceback.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SPMLError as error:
            stop(f"error: {own_message(error)}")
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            # a write that has no handler of its own (TensorBoard's, say): the disk, not a bug
            stop(f"error: {error.filename or 'writing'}: {error.strerror}")
        except RuntimeError as error:
            if not lost_a_peer(error):
                raise
            # the process that stopped first printed the cause; a traceback here would bury it
            print("error: stopped because another process of the launch stopped", file=sys.stderr)
            sys.exit(EXIT_CODE)

    return wrapper


def require_at_least(args, minimums):
    """Each command-line flag at or above its minimum, e.g. {"--batch-size": 1}; else an error naming the flag."""
    for flag, low in minimums.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value < low:
            raise SPMLError(f"{flag} must be >= {low}, got {value}")


def stop(line):
    print(line, file=sys.stderr)
    tell_the_launcher(line)
    sys.exit(EXIT_CODE)


def own_message(error):
    """The one line the error was raised with, also when a DataLoader worker raised it.

    The DataLoader re-raises a worker's exception in the main process as the same type, with
    'Caught SPMLError in DataLoader worker process N.' and the worker's whole traceback as its
    message; the traceback's last line is `ignore.errors.SPMLError: <the original message>`.
    Unwrapping it here, where errors are printed, covers every loader and every error a worker
    can raise (an image, a batch of unreadable images) without passing errors around as data.
    """
    message = str(error)
    if message.startswith(WORKER_PREFIX):
        message = message.rstrip().splitlines()[-1].split(f"{SPMLError.__name__}: ", 1)[1]
    return message


def tell_the_launcher(line):
    """Under torchrun (what `accelerate launch --multi_gpu` runs), write `line` where the
    launcher reads a failed process's error, so that its failure summary names this line as
    the root cause instead of a link to its documentation. The launcher still prints its
    own traceback and exits 1: that part is not ours to change."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as handle:
            json.dump({"message": line, "timestamp": int(time.time())}, handle)


def lost_a_peer(error):
    """Whether `error` is a collective failing because another process of the launch exited."""
    import torch.distributed as dist  # only here: the rest of this module is torch-free

    text = str(error)
    return (dist.is_available() and dist.is_initialized()
            and ("closed by peer" in text or "reset by peer" in text))
