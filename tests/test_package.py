"""`python -m bundle package`: a reproducible zoo-layout zip that runs inference on its own."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import TINY_ARCH

from bundle.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_package_is_reproducible_and_runs_inference_from_an_empty_folder(tiny_trained, tmp_path):
    root, _ = tiny_trained
    args = ["package", "--models-dir", str(root / "models")]
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--output-dir", str(tmp_path / "b")]) == 0
    (first,) = (tmp_path / "a").glob("fetal_nt_roi_cae_v*.zip")
    assert first.read_bytes() == (tmp_path / "b" / first.name).read_bytes()  # same bytes twice
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unpacked")
    assert all(n.startswith("fetal_nt_roi_cae/") for n in names)
    for required in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert f"fetal_nt_roi_cae/{required}" in names, required
    assert not [n for n in names if "__pycache__" in n or "/runs/" in n or "/data/" in n or n.endswith(".pyc")]
    bundle_dir = tmp_path / "unpacked/fetal_nt_roi_cae"
    where = subprocess.run(
        [sys.executable, "-c", "import bundle; print(bundle.__file__)"], cwd=bundle_dir, capture_output=True, text=True
    )
    assert where.stdout.strip().startswith(str(bundle_dir))  # the zip's own code, not this checkout's
    images = tmp_path / "images"
    images.mkdir()
    entries = [e for e in json.loads((root / "data/datalist.json").read_text())["data"] if e["site"] == 1][:3]
    for entry in entries:  # the dual-view model reads each image's NT box from the datalist
        (images / Path(entry["image"]).name).write_bytes((root / "data" / entry["image"]).read_bytes())
    datalist = [{"image": Path(e["image"]).name, "roi": e["roi"]} for e in entries]
    (images / "datalist.json").write_text(json.dumps({"data": datalist}))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    command += ["--dataset_dir", str(images / "datalist.json"), "--output_dir", str(tmp_path / "out")]
    command += [a for k, v in TINY_ARCH.items() for a in (f"--{k}", json.dumps(v))]
    result = subprocess.run(command, cwd=bundle_dir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "out/results.csv").open()))
    assert len(rows) == 3 and all(r["status"] == "ok" and r["ood_mahalanobis"] for r in rows)
