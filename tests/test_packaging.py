"""Packaging: the wheel holds the package and the runtime requirements, the scripts import it installed."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def name_of(requirement):
    return re.split(r"[<>=!~ ;]", requirement)[0].lower().replace("_", "-")


def requirement_names(path):
    lines = [line.strip() for line in (REPO / path).read_text().splitlines()]
    return {name_of(line) for line in lines if line and not line[0] == "#"}


def test_pytest_is_a_development_requirement_installed_by_the_readme_and_ci():
    assert "pytest" not in requirement_names("requirements.txt")
    assert "pytest" in requirement_names("requirements-dev.txt")
    (ci_command,) = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert "-r requirements-dev.txt" in ci_command and "pip install -e ." in ci_command
    assert f"\n{ci_command}\n" in (REPO / "README.md").read_text()  # exactly the README's test command


def test_the_wheel_installs_a_package_the_data_scripts_import_without_path_edits(tmp_path):
    for script in (REPO / "data_scripts").glob("*.py"):
        assert "sys.path" not in script.read_text(), script.name
    source = tmp_path / "source"  # setuptools builds in the source tree: a copy keeps the checkout clean
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "build",
                                                                "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("ignore_spml-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    assert {"ignore/export.py", "ignore/data/format.py", "ignore/losses/ignore.py", "ignore/models/build.py"} <= set(names)
    assert not any(name.startswith(("tests/", "data_scripts/")) for name in names)
    runtime = [requirement for requirement in requires if "extra ==" not in requirement]
    assert {name_of(requirement) for requirement in runtime} == requirement_names("requirements.txt")
    assert "torch==2.14.1" in runtime
    assert [requirement for requirement in requires if "extra ==" in requirement] == ['pytest<10,>=9.2; extra == "dev"']

    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                                str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # run from elsewhere: only the installed copy can provide `ignore`
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, str(REPO / "data_scripts" / "prepare_voc.py"), "--root",
                             str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nowhere'}")
    located = subprocess.run([sys.executable, "-c", "import ignore; print(ignore.__file__)"], cwd=tmp_path,
                             env=environment, capture_output=True, text=True, timeout=60)
    assert located.stdout.strip() == str(tmp_path / "site" / "ignore" / "__init__.py")
