"""The zoo's unit-test template in a fresh environment, on a clean checkout (issues 16 and 17).

A new virtual environment gets only what ``configs/metadata.json`` lists (``monai_version``,
``pytorch_version``, ``numpy_version``, ``required_packages_version``), as the model zoo's runner
builds it; the bundle itself is not installed: ``python -m monai.bundle`` finds ``bundle/`` on the
bundle root, as a zoo bundle's ``scripts/``. In a clean git copy of the checkout it then trains
(MONAI's default run id ``run``, tiny settings), evaluates the checkpoint (``run evaluating``) and
runs inference, each through ``python -m monai.bundle run`` in a subprocess, at the default output
locations. Afterwards ``git status --porcelain`` must be empty: nothing a run writes is tracked.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import venv
from pathlib import Path

from bundle.utils.paths import REPO_ROOT
from conftest import TINY_TRAINING


def _git(cwd, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _clean_copy(destination: Path) -> Path:
    """The checkout's tracked and not-ignored files, committed into a new repository."""
    files = _git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    _git(destination, "init", "-q")
    _git(destination, "add", "-A")
    _git(destination, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clean")
    return destination


def _environment_from_metadata(folder: Path, metadata: dict) -> Path:
    """A virtual environment with exactly the packages the metadata lists; returns its python."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    pins = [
        f"monai=={metadata['monai_version']}",
        f"torch=={metadata['pytorch_version']}",
        f"numpy=={metadata['numpy_version']}",
        *(f"{name}=={version}" for name, version in metadata["required_packages_version"].items()),
    ]
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *pins], capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, f"pip install {' '.join(pins)} failed:\n{result.stderr[-3000:]}"
    return python


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(python), "-m", "monai.bundle", "run", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def test_zoo_template_in_a_fresh_environment_leaves_the_checkout_clean(tmp_path):
    checkout = _clean_copy(tmp_path / "checkout")
    assert _git(checkout, "status", "--porcelain") == ""
    metadata = json.loads((checkout / "configs" / "metadata.json").read_text())
    python = _environment_from_metadata(tmp_path / "env", metadata)
    probe = subprocess.run([str(python), "-c", "import bundle"], cwd=tmp_path, capture_output=True, text=True)
    assert probe.returncode != 0, "the bundle must not be installed in the zoo's environment"

    # The zoo template's three steps; only the size of the run is smaller than the documented defaults.
    tiny = [a for key, value in {**TINY_TRAINING, "localizer": True}.items() for a in (f"--{key}", json.dumps(value))]
    _run(python, checkout, "--config_file", "configs/train.json", *tiny)
    for written in ("models/model.pt", "models/scorer.npz", "models/train_latents.npz", "runs/quick/report/metrics.md"):
        assert (checkout / written).is_file(), written
    both = "['configs/train.json','configs/evaluate.json']"
    _run(python, checkout, "evaluating", "--config_file", both, "--ckpt_path", "models/model.pt", *tiny)
    summary = json.loads((checkout / "runs/quick/evaluation/summary.json").read_text())
    assert summary, "run evaluating wrote an empty summary"
    out = "runs/inference"
    inference = (
        "--config_file",
        "configs/inference.json",
        "--dataset_dir",
        "data/synthetic/datalist.json",
        "--output_dir",
        out,
    )
    _run(python, checkout, *inference)
    rows = list(csv.DictReader((checkout / out / "results.csv").open()))
    assert rows and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows if r["status"] != "ok"]
    assert all((checkout / r["reconstruction"]).is_file() for r in rows), rows[0]["reconstruction"]

    assert _git(checkout, "status", "--porcelain") == "", "a documented command changed or added tracked files"
    # and nothing outside the documented output folders: data/ (the synthetic set), models/, runs/
    written = [line[3:] for line in _git(checkout, "status", "--porcelain", "--ignored").splitlines()]
    outside = [p for p in written if not p.startswith(("data/", "models/", "runs/")) and "__pycache__" not in p]
    assert outside == [], f"written outside data/, models/ and runs/: {outside}"
