"""Bad image files: each is read correctly or refused with one clear error naming the file.

The same files then go through the inference workflow as one folder: the run finishes, every file
gets a row (``ok`` or ``error`` with the file named), and nothing is left half-written.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bad_files import CASES, write_cases
from bundle.data.readers import ImageReadError, read_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    return write_cases(tmp_path_factory.mktemp("bad_images"))


@pytest.mark.parametrize(
    "name, expected", [(c[0], c[2]) for c in CASES], ids=[c[0].encode(errors="replace").decode() for c in CASES]
)
def test_each_file_is_read_or_refused_clearly(bad_folder, name, expected):
    path = bad_folder / name
    if expected == "ok":
        image = read_image(path).array
        assert image.ndim == 2 and np.isfinite(image).all() and 0.0 <= image.min() <= image.max() <= 1.0
    else:
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        message = str(caught.value)
        assert str(path) in message and expected in message


def test_inference_over_the_bad_folder_reports_each_file_and_finishes(tiny_trained_paper, bad_folder, tmp_path):
    import os

    from conftest import TINY_PAPER_ARCH, inference_command  # a plain folder has no NT boxes: single-view model

    root, _ = tiny_trained_paper
    out = tmp_path / "out"
    fake_bin, gs_marker = tmp_path / "fake_bin", tmp_path / "gs_was_called"  # a stand-in gs records any call
    fake_bin.mkdir()
    (fake_bin / "gs").write_text(f"#!/bin/sh\necho called > {gs_marker}\nexit 1\n")
    (fake_bin / "gs").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    command = inference_command(root / "models", bad_folder, out, TINY_PAPER_ARCH)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert not gs_marker.exists()  # the EPS named .png never reached Ghostscript (issue 30.1)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8", errors="surrogateescape")))
    assert len(rows) == len(CASES)
    by_file = {Path(row["image"]).name: row for row in rows}
    for name, _, expected in CASES:
        row = by_file[name]
        if expected == "ok":
            assert row["status"] == "ok", (name, row.get("error"))
            assert Path(row["reconstruction"]).exists() and np.load(row["latent"]).shape == (128,)
        else:
            assert row["status"] == "error" and expected in row["error"], (name, row["error"])
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers
