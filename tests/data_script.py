"""The scripts in data_scripts/ as the tests use them: imported, or run as files."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def script_path(name):
    return REPO / "data_scripts" / f"{name}.py"


def load_script(name):
    """data_scripts/<name>.py imported as a module, to call its main and its readers."""
    spec = importlib.util.spec_from_file_location(name, script_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name, *args, cwd=REPO):
    """data_scripts/<name>.py run as a file in its own process; the CompletedProcess, output captured.

    PYTHONPATH stands in for `pip install -e .` (the README's commands), which makes `ignore`
    importable from the scripts; test_packaging.py checks the installed package does.
    """
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script_path(name)), *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)
