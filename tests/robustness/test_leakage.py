"""A patient in two sites, or one image under two patients, is reported: a warning, or an error on request (19.9)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle.cli import main
from bundle.data.leakage import LeakageError, check_leakage, find_leakage
from bundle.training.workflow import prepare_datalist
from PIL import Image


def _datalist(folder: Path) -> Path:
    """Four images; s2_b shares a patient with site 0, s1_copy is a byte copy of s0_a under another patient."""
    rng = np.random.default_rng(0)
    for name in ("s0_a", "s0_b", "s2_b"):
        Image.fromarray(rng.integers(0, 255, (48, 64), dtype=np.uint8)).save(folder / f"{name}.png")
    shutil.copy(folder / "s0_a.png", folder / "s1_copy.png")
    entries = [
        {"image": "s0_a.png", "site": 0, "case_id": "s0_a", "meta": {"patient_id": "P1"}},
        {"image": "s0_b.png", "site": 0, "case_id": "s0_b", "meta": {"patient_id": "P2"}},
        {"image": "s2_b.png", "site": 2, "case_id": "s2_b", "meta": {"patient_id": "P2"}},
        {"image": "s1_copy.png", "site": 1, "case_id": "s1_copy", "meta": {"patient_id": "P9"}},
    ]
    for entry in entries:
        entry["roi"] = [10, 10, 40, 30]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"data": entries}))
    return path


def test_both_kinds_are_found(tmp_path):
    from bundle.data.datalist import load_validated_datalist

    messages = find_leakage(load_validated_datalist(_datalist(tmp_path)))
    assert len(messages) == 2
    assert "patient_id 'P2' has images in sites [0, 2]" in messages[0]
    assert "byte-identical images" in messages[1] and "s0_a.png" in messages[1] and "s1_copy.png" in messages[1]
    with pytest.raises(ValueError, match="leakage must be one of"):
        check_leakage([], "maybe")


def test_validate_warns_by_default_and_refuses_with_leakage_error(tmp_path, capsys):
    datalist = _datalist(tmp_path)
    assert main(["validate", str(datalist), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("leakage warning:") == 2 and "2 leakage warning(s) above" in captured.out
    assert main(["validate", str(datalist), "--quiet", "--leakage", "error"]) == 1
    assert "NOT usable with --leakage error" in capsys.readouterr().err


def test_training_refuses_it_with_leakage_error(tmp_path, caplog):
    datalist = _datalist(tmp_path)
    assert len(prepare_datalist(datalist)) == 4  # warn: logged, goes on
    assert sum("leakage warning" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(LeakageError, match="P2"):
        prepare_datalist(datalist, leakage="error")
