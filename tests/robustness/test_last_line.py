"""A failed main job ends with one line that names the path or the setting and the fix (issue 30.11).

The traceback MONAI's runner would print is kept only with ``FETAL_NT_TRACEBACK=1``; a SIGTERM's
last line (the resume command) is checked in ``test_kill_and_resume.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *args: str, traceback: bool = False) -> tuple[int, list[str]]:
    env = {**os.environ, "FETAL_NT_TRACEBACK": "1" if traceback else ""}
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json"]
    command += ["--bundle_root", str(tmp_path), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines


def test_a_mistyped_dataset_dir_ends_with_its_path(tmp_path):
    missing = tmp_path / "my_scnas"  # a typo of my_scans
    code, lines = _run(tmp_path, "--dataset_dir", str(missing))
    assert code != 0
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1], lines[-5:]
    assert not any(line.startswith("Traceback") for line in lines)  # no traceback for our own message


@pytest.mark.parametrize(
    "key, value", [("phase1_epochs", "abc"), ("val_fraction", "0"), ("model", "dualview")], ids=str
)
def test_a_bad_setting_ends_with_its_key_and_an_example(tmp_path, key, value):
    code, lines = _run(tmp_path, f"--{key}", value)
    assert code != 0
    assert lines[-1].startswith("error: setting ") and f"--{key} " in lines[-1], lines[-5:]
    assert not list((tmp_path / "runs").rglob("run_settings.json"))  # nothing written before the check


def test_the_traceback_is_there_on_request(tmp_path):
    code, lines = _run(tmp_path, "--phase1_epochs", "abc", traceback=True)
    assert code != 0 and any(line.startswith("Traceback") for line in lines)
    assert "phase1_epochs" in lines[-1]
