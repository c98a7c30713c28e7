"""configs/inference.json: folder and datalist input, original geometry, formats, bad files, check_properties."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle.data.readers import ImageReadError, read_image
from bundle.deploy.inference import Reconstructor, inference_items
from conftest import TINY_ARCH
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
INFERENCE = str(ROOT / "configs" / "inference.json")


def overrides(root: Path, arch: dict = TINY_ARCH) -> list[str]:
    args = ["--models_dir", str(root / "models")]
    for key, value in arch.items():
        args += [f"--{key}", json.dumps(value)]
    return args


def test_inference_config_reads_the_architecture_saved_beside_the_weights(tiny_trained, tmp_path):
    train = ConfigParser()
    train.read_config(str(ROOT / "configs/train.json"))
    keys = ("model", "canvas_size", "roi_canvas_size", "roi_margin", "network_widths", "roi_network_widths")
    untrained = ConfigParser()
    untrained.read_config(INFERENCE)
    untrained.update({"models_dir": str(tmp_path)})  # no best.json: the training defaults
    for key in (*keys, "latent_dim", "norm"):
        assert untrained.get_parsed_content(key) == train[key], key
    root, _ = tiny_trained
    trained = ConfigParser()
    trained.read_config(INFERENCE)
    trained.update({"models_dir": str(root / "models")})  # best.json of the tiny run: its settings
    for key, value in TINY_ARCH.items():
        assert trained.get_parsed_content(key) == value, key
    assert trained.get_parsed_content("model") == "dual_view"


def test_inference_config_passes_check_properties(tiny_trained):
    root, _ = tiny_trained
    settings = {"dataset_dir": str(root / "data/datalist.json"), "models_dir": str(root / "models")}
    workflow = ConfigWorkflow(config_file=INFERENCE, workflow_type="infer", run_id="run", **settings)
    workflow.initialize()
    assert workflow.check_properties() in (None, [])


def test_documented_command_on_a_folder_with_mixed_formats_and_a_corrupt_file(tiny_trained_paper, tmp_path):
    from conftest import TINY_PAPER_ARCH

    root, _ = tiny_trained_paper  # a folder has no NT boxes: the single-view model
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    pngs = sorted((root / "data/images/site2").glob("*.png"))[:2]
    for png in pngs:
        (folder / png.name).write_bytes(png.read_bytes())
    # the same synthetic case as DICOM and NIfTI, written by the generator into another folder
    from bundle.data.synthetic.dataset import write_synthetic_dataset

    write_synthetic_dataset(
        tmp_path / "formats", per_site=1, sites=1, size=(64, 64), formats=("dcm", "nii"), progress=False
    )
    for path in sorted((tmp_path / "formats/images").rglob("*.*")):
        (folder / "sub" / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (folder / "empty.dcm").write_bytes(b"")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", INFERENCE]
    command += ["--dataset_dir", str(folder), "--output_dir", str(out), *overrides(root, TINY_PAPER_ARCH)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["case_id"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert len(rows) == 6 and json.loads((out / "results.json").read_text())
    assert rows["broken"]["status"] == "error" and "broken.png" in rows["broken"]["error"]
    assert rows["empty"]["status"] == "error" and "empty" in rows["empty"]["error"]
    suffixes = {Path(r["reconstruction"]).name.split(".", 1)[1] for r in rows.values() if r["status"] == "ok"}
    assert suffixes == {"png", "dcm", "nii.gz"}
    for row in rows.values():
        if row["status"] != "ok":
            continue
        original = read_image(row["image"]).array
        assert read_image(row["reconstruction"]).array.shape == original.shape  # original geometry
        assert np.load(row["latent"]).shape == (128,)
        assert float(row["ood_mahalanobis"]) > 0 and row["ood_flag"] in ("True", "False")
        assert (row["roi_mae"] == "") == (row["roi_source"] != "predicted")  # ROI metrics need a box
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers  # nothing half-written


def test_datalist_input_adds_roi_metrics(tiny_trained, tmp_path):
    root, _ = tiny_trained
    out = tmp_path / "out"
    settings = {
        "dataset_dir": str(root / "data/datalist.json"),
        "output_dir": str(out),
        "models_dir": str(root / "models"),
    }
    workflow = ConfigWorkflow(config_file=INFERENCE, workflow_type="infer", run_id="run", **settings, **TINY_ARCH)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(inference_items(root / "data/datalist.json")) == 30
    assert all(float(r["roi_mae"]) >= 0 and float(r["roi_edge_mae"]) >= 0 for r in rows)
    assert all(0 <= float(r["zoom_roi_mae"]) <= 1 for r in rows)  # the dual-view model's zoom view
    for row in rows[:3]:
        original = read_image(row["image"]).array
        assert read_image(row["reconstruction"]).array.shape == original.shape
        assert Path(row["roi_reconstruction"]).exists()


def test_dual_view_model_reports_images_without_a_box_by_name(tiny_trained, tmp_path):
    root, _ = tiny_trained
    folder = tmp_path / "in"
    folder.mkdir()
    image = sorted((root / "data/images/site0").glob("*.png"))[0]
    (folder / "no_box.png").write_bytes(image.read_bytes())
    out = tmp_path / "out"
    models = tmp_path / "models"  # without the NT localiser (with it: tests/test_localizer.py)
    shutil.copytree(root / "models", models)
    (models / "localizer.pt").unlink()
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", INFERENCE]
    command += [
        "--dataset_dir",
        str(folder),
        "--output_dir",
        str(out),
        *overrides(root)[2:],
        "--models_dir",
        str(models),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = csv.DictReader((out / "results.csv").open())
    assert row["status"] == "error" and "no_box.png" in row["error"] and "train_localizer" in row["error"]


def test_reconstructor_api(tiny_trained, tmp_path):
    root, _ = tiny_trained
    model = Reconstructor(overrides={"models_dir": str(root / "models")})  # architecture from best.json
    image = sorted((root / "data/images/site0").glob("*.png"))[0]
    result = model.run(image, roi=[10, 10, 30, 20])
    assert result["reconstruction"].shape == np.asarray(Image.open(image)).shape[:2]
    assert result["latent"].shape == (128,) and "roi_mae" in result["metrics"]
    assert {"ood_mahalanobis", "ood_knn", "ood_flag", "predicted_roi_edge_mae"} == set(result["scores"])
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="bad.png"):
        model.run(tmp_path / "bad.png")


def test_batched_metrics_equal_one_image_at_a_time():
    import torch
    from bundle.deploy.inference import batch_metrics

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 64, 64, generator=generator)
    preds = (images + 0.1 * torch.randn(4, 1, 64, 64, generator=generator)).clamp(0, 1)
    rois = [[10, 20, 40, 30], None, [200, 200, 210, 210], [0.5, 0.5, 3.2, 2.7]]  # box, none, off-canvas, tiny
    batched = batch_metrics({"global": preds}, {"image": images, "roi": rois})
    for i, roi in enumerate(rois):
        alone = batch_metrics({"global": preds[i : i + 1]}, {"image": images[i : i + 1], "roi": [roi]})[0]
        assert batched[i].keys() == alone.keys()
        assert all(abs(batched[i][k] - alone[k]) < 1e-5 for k in alone)
    assert "roi_mae" not in batched[1] and all("roi_edge_mae" in batched[i] for i in (0, 2, 3))
