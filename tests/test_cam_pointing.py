"""The CAM localisation benchmark's figures on hand-made maps (the script itself reads finished runs)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cam_pointing  # noqa: E402


def test_pointing_and_mass_on_hand_made_maps():
    cam = torch.zeros(2, 3, 4, 4)
    cam[0] = 1.0  # constant: the peak is the first cell, centred at (8, 8); the mass spreads evenly
    cam[1] = -1.0
    cam[1, 2, 3, 3] = -0.5  # all negative: no positive mass; the peak cell is centred at (56, 56)
    objects = [[(1, (0, 0, 16, 16)), (0, (40, 0, 56, 16))], [(2, (32, 48, 64, 64))]]
    hits, mass, pairs = cam_pointing.cam_figures(cam, objects)
    assert (hits, pairs) == (2, 3)  # class 1 of image 0 and class 2 of image 1; class 0's box misses (8, 8)
    assert mass == pytest.approx(2 * 16 * 16 / 64 ** 2)  # each 16x16 box holds its share of a constant map


def test_a_missing_run_is_one_line_and_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cam_pointing.main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'missing' / 'config.yaml'}: ") and error.count("\n") == 1
