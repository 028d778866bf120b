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
from PIL import Image

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


def test_the_installed_package_trains_compares_predicts_and_evaluates_from_any_folder(tiny_dataset, tmp_path):
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

    def run(command, *args, exit_code=0):
        result = subprocess.run([str(bin_dir / f"ignore-{command}"), *map(str, args)], cwd=work, env=environment,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == exit_code, f"ignore-{command}: {result.stderr[-3000:]}"
        return result

    located = subprocess.run([str(bin_dir / "python"), "-c", "import ignore; print(ignore.__file__)"], cwd=work,
                             env=environment, capture_output=True, text=True, timeout=60)
    assert located.stdout.strip().startswith(str(tmp_path / "venv")), located.stdout  # the installed copy
    # a shipped recipe by name: it loads, then the override stops the run before anything is made
    recipe = run("train", "--config", "ignore_resnet50_paper", "model.backbone=typo", exit_code=2)
    assert recipe.stderr.startswith("error: config key 'model.backbone' must be one of")

    settings = [f"data.path={tiny_dataset}", "data.image_size=32", "data.num_workers=0", "train.batch_size=8",
                "train.epochs=2", "method.warm_up=1", "method.ll_delta_rel=10"]
    run("train", *settings, "method.name=an", "train.output_dir=compare/an/seed0")
    compared = run("compare", "--methods", "an", "ll_r", "--seeds", "0", "--out", "compare", *settings)
    assert compared.stdout.count("reusing") == 1  # the run ignore-train made has the settings compare asks for
    check_the_comparison(work / "compare", compared.stdout)

    export = work / "compare" / "an" / "seed0" / "export"
    run("predict", "--model", "compare/an/seed0/export", tiny_dataset / "images" / "test", "--out", "predictions.csv")
    assert len((work / "predictions.csv").read_text().splitlines()) == 1 + 16
    run("evaluate", "--model", "compare/an/seed0/export", "--data", tiny_dataset, "--out", "evaluated.json")
    test_map = json.loads((export.parent / "metrics.json").read_text())["test"]["mAP"]
    assert json.loads((work / "evaluated.json").read_text())["mAP"] == pytest.approx(test_map, abs=1e-4)

    for script in (REPO / "data_scripts").glob("*.py"):
        assert "sys.path" not in script.read_text(), script.name
    converter = subprocess.run([str(bin_dir / "python"), REPO / "data_scripts" / "prepare_voc.py", "--root", "nowhere",
                                "--out", "voc"], cwd=work, env=environment, capture_output=True, text=True, timeout=120)
    assert converter.returncode == 2 and converter.stderr.strip().splitlines()[-1].startswith("error: nowhere")
    assert files_under(REPO) == repository_before  # nothing written into the checkout

    before = {method: (work / "compare" / method / "seed0" / "metrics.json").stat().st_mtime_ns
              for method in ("an", "ll_r")}
    again = run("compare", "--methods", "an", "ll_r", "--seeds", "0", "--out", "compare", *settings)
    assert "$ " not in again.stdout and again.stdout.count("reusing") == 2  # nothing retrained
    assert {method: (work / "compare" / method / "seed0" / "metrics.json").stat().st_mtime_ns
            for method in before} == before
    changed = run("compare", "--methods", "an", "--seeds", "0", "--out", "compare", *settings, "train.epochs=3",
                  exit_code=2)
    assert changed.stderr.strip().splitlines()[-1] == (
        "error: compare/an/seed0 holds a run with other settings (train.epochs: 2 -> 3); use another --out or delete it")


def table_rows(text):
    """{method: cells} of comparison.md's markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| method") and len(cells) == 8:
            rows[cells[0]] = cells[1:]
    return rows


def check_the_comparison(out, printed):
    """comparison.md is what was printed, its rows are the runs' metrics.json, and the chart is a picture."""
    text = (out / "comparison.md").read_text()
    assert text.strip() in printed
    rows = table_rows(text)
    assert sorted(rows) == ["an", "ll_r"]
    for method in ("an", "ll_r"):
        metrics = json.loads((out / method / "seed0" / "metrics.json").read_text())
        mean_std, per_seed, cf1, of1, seconds, fn_precision, fn_recall = rows[method]
        assert mean_std == f"{metrics['test']['mAP']:.2f} ± 0.00"
        assert per_seed == f"{metrics['test']['mAP']:.2f}"
        assert (cf1, of1) == (f"{metrics['test']['CF1']:.2f}", f"{metrics['test']['OF1']:.2f}")
        assert seconds == f"{metrics['train_seconds']:.0f}"
        train = metrics["epochs"][-1]["train"]
        if method == "an":  # rejects and corrects nothing
            assert (fn_precision, fn_recall) == ("-", "-")
        else:  # 10% of the entries rejected in the second epoch
            assert train["flagged"] > 0
            assert fn_precision == f"{train['flagged_true_fn'] / train['flagged']:.3f}"
            assert fn_recall == f"{train['flagged_true_fn'] / train['false_negatives']:.3f}"
    with Image.open(out / "comparison.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 200 and picture.size[1] > 200


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
