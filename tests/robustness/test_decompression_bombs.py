"""Decompression bombs are refused from their headers, by name, in every reader path (issues 18 and 19.2).

A 118-byte PNG claiming 40000 x 40000, a 140 kB PNG and a 140 kB .nii.gz that really hold 12000 x
12000 zeros, a JPEG claiming 65500^2, a TIFF claiming 60000^2 and a 600 kB deflated DICOM that
inflates to 600 MB. With the 0.8.0 readers the 12000^2 files cost 1.8 GB each and the DICOM 11.4 GB
(measured by hand); now every one is refused before decoding.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bombs import BOMBS, write_bombs
from bundle.data.readers import MAX_PIXELS_ENV, ImageReadError, read_image
from conftest import inference_command
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PEAK_LIMIT_MB = 500


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    return write_bombs(tmp_path_factory.mktemp("bombs"))


def _peak_mb(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` from a fresh wrapper process and return its result and its peak resident memory."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "result = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True)\n"
        "sys.stdout.write(result.stdout); sys.stderr.write(result.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)\n"
        "sys.exit(result.returncode)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, json.dumps(command)], capture_output=True, text=True, timeout=600, **kwargs
    )
    return result, float(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, expected", [(b[0], b[2]) for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_each_bomb_is_refused_by_name_from_its_header(bombs, name, expected):
    path = bombs.parent / name
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert str(path) in message and expected in message and "max_image_pixels" in message


def test_validate_names_every_bomb_and_stays_under_500_mb(bombs):
    command = [sys.executable, "-m", "bundle", "validate", str(bombs), "--quiet"]
    result, peak = _peak_mb(command, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    for name, _, _ in BOMBS:
        assert name in result.stderr, name
    assert "NOT usable" in result.stderr
    assert peak < PEAK_LIMIT_MB, f"validate peaked at {peak:.0f} MB"


def test_inference_reports_each_bomb_as_an_error_row_and_finishes(tiny_trained, bombs, tmp_path):
    root, _ = tiny_trained
    out = tmp_path / "out"
    command = inference_command(root / "models", bombs, out)
    result, peak = _peak_mb(command, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(r["image"]).name: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {b[0] for b in BOMBS}
    for name, _, expected in BOMBS:
        assert rows[name]["status"] == "error" and name in rows[name]["error"] and expected in rows[name]["error"]
    assert peak < 1024, f"inference peaked at {peak:.0f} MB"  # torch and the model included


def test_the_pixel_limit_is_configurable(tmp_path):
    image = tmp_path / "small.png"
    Image.fromarray(np.full((60, 80), 90, np.uint8)).save(image)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(
        json.dumps({"data": [{"image": "small.png", "roi": [10, 10, 40, 30], "site": 0, "case_id": "small"}]})
    )
    validate = [sys.executable, "-m", "bundle", "validate", str(datalist), "--quiet"]
    assert subprocess.run(validate, cwd=ROOT, capture_output=True).returncode == 0
    lowered = subprocess.run([*validate, "--max-pixels", "4000"], cwd=ROOT, capture_output=True, text=True)
    assert lowered.returncode == 1 and "60 x 80 image (4,800 pixels), over the limit of 4,000" in lowered.stderr
    env_limited = subprocess.run(
        validate, cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, MAX_PIXELS_ENV: "4000"}
    )
    assert env_limited.returncode == 1 and "over the limit of 4,000" in env_limited.stderr


def test_training_names_every_bomb_before_any_work(bombs):
    from bundle.data.datalist import DatalistError
    from bundle.training.workflow import prepare_datalist

    with pytest.raises(DatalistError) as caught:
        prepare_datalist(bombs)
    message = str(caught.value)
    assert all(name in message for name, _, _ in BOMBS), message


def test_score_gives_each_bomb_an_error_row(tiny_trained, bombs, tmp_path):
    from bundle.deploy.embed import score_images
    from bundle.deploy.export import export_torchscript
    from conftest import TINY_ARCH

    root, _ = tiny_trained
    encoder = export_torchscript(tmp_path / "encoder.ts", root / "models/encoder.pt", **TINY_ARCH)
    rows = score_images(bombs, encoder, root / "models/scorer.npz", progress=False)
    assert len(rows) == len(BOMBS)
    for row, (name, _, expected) in zip(rows, BOMBS, strict=True):
        assert name in row["error"] and expected in row["error"], row


def test_monai_label_scoring_goes_on_past_a_bomb(tiny_trained_paper, bombs, monkeypatch):
    from conftest import TINY_PAPER_ARCH

    monkeypatch.syspath_prepend(str(ROOT / "bundle" / "monailabel_app"))
    from lib.model import SharedReconstructor
    from lib.scoring import OODScoring

    root, _ = tiny_trained_paper
    good = sorted((root / "data/images/site0").glob("*.png"))[:2]
    files = {p.stem: str(p) for p in good} | {"bomb": str(bombs.parent / "png_12000.png")}

    class Store:  # the part of MONAI Label's datastore the scoring method uses
        info: dict = {}

        def list_images(self):
            return ["bomb", *sorted(k for k in files if k != "bomb")]

        def get_image_uri(self, image_id):
            return files[image_id]

        def get_label_by_image_id(self, image_id, tag):
            return None

        def get_image_info(self, image_id):
            return {}

        def update_image_info(self, image_id, info):
            self.info[image_id] = info

    overrides = {"models_dir": str(root / "models"), **TINY_PAPER_ARCH}
    result = OODScoring(SharedReconstructor(overrides))({}, store := Store())
    assert set(result["scored"]) == {p.stem for p in good} == set(store.info)
    assert "12000 x 12000" in result["failed"]["bomb"]
