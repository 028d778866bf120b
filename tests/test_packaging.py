"""Packaging: the wheel holds the package and the runtime requirements, the scripts import it installed."""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def name_of(requirement):
    return re.split(r"[<>=!~ ;]", requirement)[0].lower().replace("_", "-")


def requirement_names(path):
    lines = [line.strip() for line in (REPO / path).read_text().splitlines()]
    return {name_of(line) for line in lines if line and not line[0] == "#"}


def test_pytest_is_a_development_requirement_installed_by_the_readme_and_ci():
    assert "pytest" not in requirement_names("requirements.txt")
    assert "pytest" in requirement_names("requirements-dev.txt")
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()
    (ci_command,) = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert "-r requirements-dev.txt" in ci_command and "pip install -e ." in ci_command
    assert f"\n{ci_command}\n" in (REPO / "README.md").read_text()  # exactly the README's test command


def build_wheel(tmp_path):
    source = tmp_path / "source"  # setuptools builds in the source tree: a copy keeps the checkout clean
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "build",
                                                                "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("ignore_spml-*.whl")
    return wheel


def install_into_a_fresh_environment(wheel, environment):
    """A new virtual environment with the wheel installed (not editable); the packages it depends on come
    from this environment's site-packages, added behind its own (installing torch anew takes minutes)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True, timeout=120)
    python = environment / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(own_site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return environment / "bin"


def files_under(folder):
    return {path.relative_to(folder) for path in folder.rglob("*")
            if not {".git", ".venv", "__pycache__", ".pytest_cache"} & set(path.relative_to(folder).parts)}


def test_the_installed_package_trains_predicts_evaluates_and_compares_from_any_folder(tiny_dataset, tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert {"ignore/train.py", "ignore/training/loop.py", "ignore/models/export.py",
            "ignore/configs/ignore_resnet50_paper.yaml"} <= set(names)
    assert not any(name.startswith(("tests/", "data_scripts/", "benchmarks/")) for name in names)
    torch_requirement = next(requirement for requirement in requires if name_of(requirement) == "torch")
    assert "==" not in torch_requirement  # the package does not pin one torch release; requirements.txt does
    assert "torch==2.14.1" in (REPO / "requirements.txt").read_text().splitlines()
    for command in ("train", "predict", "evaluate", "compare", "export"):
        assert f"ignore-{command} = ignore.{command}:main" in scripts

    bin_dir = install_into_a_fresh_environment(wheel, tmp_path / "venv")
    work = tmp_path / "work"  # an empty folder elsewhere: every relative path means this folder
    work.mkdir()
    repository_before = files_under(REPO)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "", "MPLCONFIGDIR": str(work / ".matplotlib")}

    def run(command, *args):
        result = subprocess.run([str(bin_dir / f"ignore-{command}"), *map(str, args)], cwd=work, env=environment,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"ignore-{command}: {result.stderr[-3000:]}"
        return result

    located = subprocess.run([str(bin_dir / "python"), "-c", "import ignore; print(ignore.__file__)"], cwd=work,
                             env=environment, capture_output=True, text=True, timeout=60)
    assert located.stdout.strip().startswith(str(tmp_path / "venv")), located.stdout  # the installed copy
    settings = [f"data.path={tiny_dataset}", "data.image_size=32", "data.num_workers=0", "train.batch_size=8",
                "train.epochs=1", "method.warm_up=0"]
    run("train", "--config", "ignore_mobilenet_demo", *settings, "model.pretrained=", "model.backbone=small_cnn",
        "model.output_stride=32", "train.output_dir=run")
    assert (work / "run" / "export" / "model.safetensors").is_file() and (work / "run" / "metrics.json").is_file()
    run("predict", "--model", "run/export", tiny_dataset / "images" / "test", "--out", "predictions.csv")
    assert len((work / "predictions.csv").read_text().splitlines()) == 1 + 16
    run("evaluate", "--model", "run/export", "--data", tiny_dataset, "--out", "evaluated.json")
    test_map = json.loads((work / "run" / "metrics.json").read_text())["test"]["mAP"]
    assert json.loads((work / "evaluated.json").read_text())["mAP"] == pytest.approx(test_map, abs=1e-4)
    compared = run("compare", "--methods", "an", "ignore", "--out", "cmp", *settings)
    assert "| an |" in compared.stdout and "| ignore |" in compared.stdout
    assert {"comparison.md", "comparison.png", "an", "ignore"} <= {path.name for path in (work / "cmp").iterdir()}
    for script in (REPO / "data_scripts").glob("*.py"):
        assert "sys.path" not in script.read_text(), script.name
    converter = subprocess.run([str(bin_dir / "python"), REPO / "data_scripts" / "prepare_voc.py", "--root", "nowhere",
                                "--out", "voc"], cwd=work, env=environment, capture_output=True, text=True, timeout=120)
    assert converter.returncode == 2 and converter.stderr.strip().splitlines()[-1].startswith("error: nowhere")
    assert files_under(REPO) == repository_before  # nothing written into the checkout


def prose_lines(text):
    """The lines of a markdown text outside code blocks and tables."""
    lines, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and not line.startswith("|"):
            lines.append(line)
    return lines


def test_the_readme_is_short_and_every_link_of_the_docs_stays_in_the_repository():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert [line for line in prose_lines(readme) if len(line) > 120] == []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            assert not re.match(r"[a-z]+:", target), f"{page.name}: {target} points outside the repository"
            path = target.split("#")[0]
            assert not path or (page.parent / path).exists(), f"{page.name}: {target} does not exist"
