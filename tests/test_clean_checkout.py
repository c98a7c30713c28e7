"""The main job leaves a clean checkout clean: everything it writes is ignored by git (issue 16)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from bundle.utils.paths import REPO_ROOT
from conftest import TINY_TRAINING


def _git(cwd, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_main_job_leaves_the_checkout_clean(tmp_path):
    checkout = tmp_path / "checkout"
    files = _git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    _git(checkout, "init", "-q")
    _git(checkout, "add", "-A")
    _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clean")
    assert _git(checkout, "status", "--porcelain") == ""

    # The documented command, at its default output locations; only the size of the run is smaller.
    args = []
    for key, value in TINY_TRAINING.items():
        args += [f"--{key}", json.dumps(value)]
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json", *args]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for written in ("models/model.pt", "models/scorer.npz", "models/train_latents.npz", "runs/quick/report/metrics.md"):
        assert (checkout / written).is_file(), written
    assert _git(checkout, "status", "--porcelain") == "", "the main job changed or added tracked files"
