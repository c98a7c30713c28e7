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


def test_a_bad_setting_ends_with_its_key_and_an_example(tmp_path):
    code, lines = _run(tmp_path, "--phase1_epochs", "abc")
    assert code != 0
    last = lines[-1]
    assert last.startswith("error: setting phase1_epochs = 'abc'") and "--phase1_epochs 30" in last, lines[-5:]
    assert not any(line.startswith("Traceback") for line in lines)
    assert not list((tmp_path / "runs").rglob("run_settings.json"))  # nothing written before the check


@pytest.mark.parametrize(
    "key, value, example",
    [("val_fraction", 0.0, "--val_fraction 0.15"), ("model", "dualview", "--model dual_view"), ("augment", "yes", "")],
    ids=str,
)
def test_each_setting_is_checked_by_name(key, value, example):
    from bundle.training.settings import check_setting_values

    with pytest.raises(ValueError, match=f"setting {key} = {value!r} must be") as caught:
        check_setting_values({"phase1_epochs": 30, key: value})
    assert example in str(caught.value) and "(nothing was started)" in str(caught.value)
    fine = {"held_out_site": -1, "val_fraction": 0.15}  # -1: no held-out site (the MONAI Label train task)
    assert check_setting_values(fine) == fine


def test_the_traceback_is_there_on_request(monkeypatch, capsys):
    import sys as system

    from bundle.training import errors

    error = ValueError("settings: bad value")
    try:
        raise RuntimeError("Failed to evaluate ConfigExpression") from error
    except RuntimeError as wrapped:
        caught = wrapped
    monkeypatch.setattr(errors, "deliberate_error", lambda e: error)
    monkeypatch.setenv("FETAL_NT_TRACEBACK", "1")
    errors._hook(type(caught), caught, caught.__traceback__)
    with_traceback = capsys.readouterr().err
    monkeypatch.setenv("FETAL_NT_TRACEBACK", "")
    errors._hook(type(caught), caught, caught.__traceback__)
    without = capsys.readouterr().err
    assert "Traceback" in with_traceback and with_traceback.strip().splitlines()[-1] == "error: settings: bad value"
    assert "Traceback" not in without and without.strip().splitlines()[-1] == "error: settings: bad value"
    assert system.excepthook is errors._hook  # importing the module installed it


def test_a_full_disk_and_our_own_errors_are_told_apart_from_bugs():
    import errno

    from bundle.training.errors import deliberate_error, user_message

    full = OSError(errno.ENOSPC, "No space left on device", "/data/runs/quick/checkpoints/x.pt")
    wrapped = RuntimeError("Failed to evaluate ConfigExpression: $@run_phase1")
    wrapped.__cause__ = full
    assert deliberate_error(wrapped) is full
    assert user_message(full) == (
        "error: no space left on /data/runs/quick/checkpoints/x.pt; free some space or choose another "
        "--output_dir, then run again"
    )
    from bundle.data.readers import ImageReadError

    ours = ImageReadError("scan.png: file is empty (0 bytes); re-export or remove it from the datalist")
    wrapped.__cause__ = ours
    assert deliberate_error(wrapped) is ours and user_message(ours).startswith("error: scan.png: file is empty")
    try:
        {}["a bug"]  # a KeyError raised by Python in the test, not by the bundle on purpose
    except KeyError as bug:
        assert deliberate_error(bug) is None
