"""A full disk while writing a checkpoint, an export, predictions or the scalar log: one line, exit 2, the last
complete file kept and nothing half-written left. The disk is really full: a small tmpfs (mounting needs root)."""
import errno
import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from ignore.config import load_config
from ignore.errors import SPMLError, exit_on_error
from ignore.files import append_line
from ignore.models.export import load_export, write_export
from ignore.predict import main as predict_main
from ignore.train import setting_choices
from ignore.training.checkpoint import Progress, checkpoint_damage, save_checkpoint
from test_export import info_for, trained

MODEL_BYTES = 2_149_516  # small_cnn's weights with 3 classes; Adam's state is twice that


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)  # lazy: a failed writer may still hold a file


def fill(disk, leave=0):
    """Leave `leave` bytes free on the disk."""
    with open(disk / "filler", "wb") as filler:
        filler.write(bytes(shutil.disk_usage(disk).free - leave))


@pytest.mark.parametrize("leave, reason", [
    (0, "No space left on device"),  # the weights, through safetensors, fail first
    (MODEL_BYTES + 400_000, "the file writer stopped with "),  # the weights fit, the optimiser (torch.save) does not
])
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(small_disk, leave, reason):
    accelerator = Accelerator(cpu=True)
    network = trained("small_cnn")
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.randn(2, 3, 32, 32))["logits"].sum().backward()
    optimizer.step()  # Adam's moments exist from here on
    model, optimizer = accelerator.prepare(network, optimizer)
    config = load_config(None, [f"train.output_dir={small_disk / 'run'}"], setting_choices())
    run = SimpleNamespace(accelerator=accelerator, config=config, model=model, method=torch.nn.Module(),
                          progress=Progress(global_step=1))
    first = save_checkpoint(run)
    fill(small_disk, leave)
    run.progress.global_step = 2
    with pytest.raises(SPMLError) as stopped:
        save_checkpoint(run)
    checkpoints = small_disk / "run" / "checkpoints"
    assert str(stopped.value).startswith(f"{checkpoints / 'step-000000002'}: cannot write ({reason}")
    assert str(stopped.value).endswith(f"); the newest checkpoint is still {first}")
    assert [path.name for path in checkpoints.iterdir()] == ["step-000000001"]
    assert checkpoint_damage(first) is None


def test_a_full_disk_while_exporting_keeps_the_previous_export(small_disk):
    export = small_disk / "export"
    write_export(export, trained("small_cnn"), info_for("small_cnn"))
    before = load_export(export).network.state_dict()
    fill(small_disk)
    with pytest.raises(SPMLError) as stopped:
        write_export(export, trained("small_cnn"), info_for("small_cnn", epoch=2))
    assert str(stopped.value) == f"{export}: cannot write (No space left on device); the previous export is kept"
    assert sorted(path.name for path in small_disk.iterdir()) == ["export", "filler"]  # no export.partial
    after = load_export(export)
    assert after.export_info["epoch"] == 1
    assert all(torch.equal(before[name], tensor) for name, tensor in after.network.state_dict().items())


def test_a_full_disk_while_writing_predictions_is_one_line_and_keeps_the_old_file(small_disk, tmp_path, capsys):
    write_export(tmp_path / "export", trained("small_cnn"), info_for("small_cnn"))
    Image.new("RGB", (32, 32), "white").save(tmp_path / "a.png")
    out = small_disk / "predictions.csv"
    out.write_text("the last run's predictions\n")
    fill(small_disk)
    with pytest.raises(SystemExit) as stopped:
        predict_main(["--model", str(tmp_path / "export"), str(tmp_path / "a.png"), "--out", str(out),
                      "--num-workers", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {out}: cannot write (No space left on device); the previous predictions.csv is kept")
    assert out.read_text() == "the last run's predictions\n"
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "predictions.csv"]


def test_a_full_disk_cuts_a_log_back_to_its_whole_lines(small_disk):
    log = small_disk / "scalars.jsonl"
    append_line(log, '{"step": 1}')
    fill(small_disk)
    with pytest.raises(SPMLError) as stopped:
        append_line(log, '{"step": 2, "long": "' + "x" * 20_000 + '"}')  # more than the page the log's end is in
    assert str(stopped.value) == f"{log}: cannot append (No space left on device); the lines before are kept"
    assert log.read_text() == '{"step": 1}\n'


def test_a_full_disk_in_a_write_without_a_handler_of_its_own_is_one_line(capsys):
    @exit_on_error
    def main():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/demo/tensorboard/events.out")

    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: runs/demo/tensorboard/events.out: No space left on device\n"
