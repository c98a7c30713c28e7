"""`python -m bundle package`: a reproducible zoo-layout zip that runs inference on its own."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from bundle.cli import main
from bundle.deploy.package import DEFAULT_WEIGHTS_URL

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
    for name in (n for n in names if n.endswith(".json")):  # the zoo's pretty-format-json hook, trained files too
        text = (tmp_path / "unpacked" / name).read_text()
        assert text == json.dumps(json.loads(text), indent=4, ensure_ascii=False) + "\n", name
    outputs = ("fetal_nt_roi_cae/runs/", "fetal_nt_roi_cae/data/", "fetal_nt_roi_cae/tests/")
    assert not [n for n in names if "__pycache__" in n or n.startswith(outputs) or n.endswith(".pyc")]
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
    # no architecture overrides: the packaged models/best.json carries them
    result = subprocess.run(command, cwd=bundle_dir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "out/results.csv").open()))
    assert len(rows) == 3 and all(r["status"] == "ok" and r["ood_mahalanobis"] for r in rows)


def test_large_files_yml_is_in_the_zoo_format_and_matches_the_packaged_weights(tiny_trained, tmp_path):
    from monai.apps import download_url
    from monai.bundle import ConfigParser

    root, _ = tiny_trained
    url = "https://example.invalid/fetal_nt_roi_cae"
    args = ["package", "--models-dir", str(root / "models"), "--output-dir", str(tmp_path), "--weights-url", url]
    assert main(args) == 0
    (archive,) = tmp_path.glob("fetal_nt_roi_cae_v*.zip")
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(tmp_path / "unpacked")
    bundle_dir = tmp_path / "unpacked/fetal_nt_roi_cae"
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "large_files.yml"))  # as the zoo's ci/utils.download_large_files reads it
    entries = parser.get()["large_files"]
    assert {"models/model.pt", "models/encoder.pt", "models/phase1/model.pt"} <= {e["path"] for e in entries}
    for entry in entries:
        assert set(entry) == {"path", "url", "hash_val", "hash_type"} and entry["hash_type"] == "md5"
        assert entry["url"] == f"{url}/{entry['path']}"
        # the zoo's download step: a present file with the right hash is kept, nothing is fetched
        download_url(
            url=entry["url"],
            filepath=str(bundle_dir / entry["path"]),
            hash_val=entry["hash_val"],
            hash_type="md5",
            fuzzy=True,
        )


def test_hugging_face_package_loads_offline_with_monai_bundle_load(tiny_trained, tmp_path):
    root, _ = tiny_trained
    assert main(["package", "--format", "hf", "--models-dir", str(root / "models"), "--output-dir", str(tmp_path)]) == 0
    hub = tmp_path / "fetal_nt_roi_cae_hf"
    for required in (
        "configs/inference.json",
        "configs/metadata.json",
        "models/model.pt",
        "large_files.yml",
        "LICENSE",
    ):
        assert (hub / required).is_file(), required
    # the Hub schema (meta_schema_hf_20250321.json) also requires ``name`` and ``huggingface_url``
    meta = json.loads((hub / "configs/metadata.json").read_text())
    assert meta["name"] == "fetal_nt_roi_cae"
    assert meta["huggingface_url"] == DEFAULT_WEIGHTS_URL.rsplit("/resolve", 1)[0]
    card = (hub / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "license: apache-2.0" in front and "library_name: monai" in front and "- monai" in front
    assert "](docs/" in body and "](training.md)" not in body  # links still reach docs/ from the repository root
    # ``monai.bundle download --source huggingface_hub`` puts the snapshot at <bundle_dir>/<name>; load() finds
    # the weights there and downloads nothing. Run inside the snapshot, as a user of the downloaded bundle would.
    bundle_dir = tmp_path / "hub_cache"
    shutil.copytree(hub, bundle_dir / "fetal_nt_roi_cae")
    script = (
        "import torch, monai.bundle\n"
        "net = monai.bundle.load(name='fetal_nt_roi_cae', bundle_dir='..', source='huggingface_hub', "
        "workflow_type='inference', device='cpu')\n"
        "net.eval()\n"
        "torch.manual_seed(0)\n"
        "print(float(net(torch.rand(1, 1, 64, 96)).sum()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=bundle_dir / "fetal_nt_roi_cae",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from bundle.model.architecture import saved_architecture
    from bundle.model.network import build_autoencoder
    from bundle.utils.checkpoints import load_model_weights

    arch = saved_architecture(root / "models/model.pt")
    reference = build_autoencoder(
        arch["model"],
        arch["canvas_size"],
        arch["roi_canvas_size"],
        arch["network_widths"],
        arch["roi_network_widths"],
        arch["latent_dim"],
        arch["norm"],
    )
    reference = load_model_weights(reference, root / "models/model.pt").eval()
    torch.manual_seed(0)
    expected = float(reference(torch.rand(1, 1, 64, 96)).sum())
    assert abs(float(result.stdout.strip().splitlines()[-1]) - expected) < 1e-3
