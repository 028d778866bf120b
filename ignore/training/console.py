"""What a run says: its lines on the console and in <run>/train.log, and its progress bars.

The main process says each line twice: on stdout through tqdm.write, which clears the progress bars, writes the
line and draws them again below it (a plain print lands after a bar's last frame, on the bar's own line), and in
train.log with the time. The other processes say nothing. The bars draw on the main process only, and only on a
terminal: output captured to a file or a pipe holds the lines alone, without the bars' carriage returns.

A plain `logging` logger rather than Accelerate's `get_logger`: that adapter starts every line with "[RANK 0]",
and a logger with handlers on the main process only already keeps the other processes quiet.
"""
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import SPMLError, own_message

TRAIN_LOG = "train.log"
LOGGER = logging.getLogger("ignore.run")


def say(line):
    """One line on the console and in train.log (main process; a no-op on the others)."""
    LOGGER.info(line)


class BarSafeConsole(logging.Handler):
    """Writes each line to stdout with tqdm.write, so that it never shares a line with a progress bar."""

    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stdout)  # sys.stdout now: a test may have replaced it


@contextmanager
def run_log(output_dir, accelerator, fresh):
    """say() on the console and in output_dir/train.log while the block runs; the file is closed at its end.

    fresh: a fresh run's log starts empty, a resumed run's lines go after the lines already there. The file is
    opened at the first line: a run refused before it says anything (a resume with other settings) leaves the
    folder as it was. An SPMLError that ends a run which has begun its log is the log's last line, as it is the
    console's (where errors.exit_on_error writes it).
    """
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # a root logger configured elsewhere (a notebook's) would print every line again
    if not accelerator.is_main_process:
        yield
        return
    log_file = logging.FileHandler(Path(output_dir) / TRAIN_LOG, mode="w" if fresh else "a", encoding="utf-8",
                                   delay=True)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handlers = [BarSafeConsole(), log_file]
    for handler in handlers:
        LOGGER.addHandler(handler)
    try:
        yield
    except SPMLError as error:
        if log_file.stream is not None:
            log_file.handle(LOGGER.makeRecord(LOGGER.name, logging.ERROR, __file__, 0, f"error: {own_message(error)}",
                                              None, None))
        raise
    finally:
        for handler in handlers:
            LOGGER.removeHandler(handler)
            handler.close()


def progress_bar(accelerator, iterable=None, **settings):
    """A tqdm bar on the main process when it writes to a terminal (tqdm's disable=None), else none."""
    return tqdm(iterable, disable=None if accelerator.is_main_process else True, dynamic_ncols=True, **settings)
