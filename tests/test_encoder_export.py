"""Encoder export, the no-bundle snippet of docs/encoder.md, the probe workflow and the score CLI."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle.cli import main
from bundle.latent.scoring import load_scorer
from conftest import TINY_ARCH as ARCH
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "train.json")
PROBES = str(ROOT / "configs" / "probes.json")


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def set_args(settings: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


@pytest.fixture(scope="module")
def exported(trained):
    root, _ = trained
    assert (
        main(["export", "--output-dir", str(root / "models"), "--formats", "ts", "onnx", "--set", *set_args(ARCH)]) == 0
    )
    return root / "models"


def test_training_saves_latents_and_a_scorer_beside_the_encoder(trained):
    root, _ = trained
    with np.load(root / "models/train_latents.npz", allow_pickle=False) as table:
        assert table["z"].shape[1] == 128 and set(table["split"].tolist()) == {"train", "val"}
        assert np.isfinite(table["roi_edge_mae"]).all()
        n_train = int((table["split"] == "train").sum())
    scorer = load_scorer(root / "models/scorer.npz")
    assert scorer.bank.shape == (n_train, 128) and scorer.k == 5 and scorer.info["canvas_size"] == "64"


def test_export_round_trip_torchscript_and_onnx(trained, exported):
    from bundle.deploy.export import max_latent_difference
    from bundle.model.network import DualViewEncoder
    from bundle.utils.checkpoints import load_model_weights
    from monai.data import load_net_with_metadata

    encoder = DualViewEncoder(widths=ARCH["network_widths"], roi_widths=ARCH["roi_network_widths"])
    encoder = load_model_weights(encoder, exported / "encoder.pt")
    for name in ("encoder.ts", "encoder.onnx"):
        assert max_latent_difference(encoder, exported / name, 64, n=3, roi_canvas_size=32) <= 1e-5, name
    net, meta, extra = load_net_with_metadata(str(exported / "encoder.ts"), more_extra_files=("train.json",))
    assert meta["encoder_data_format"]["inputs"]["image"]["spatial_shape"] == [64, 64]
    assert meta["encoder_data_format"]["inputs"]["roi_view"]["spatial_shape"] == [32, 32]
    assert "encoder_def" in json.loads(extra["train.json"])
    images, views = torch.rand(5, 1, 64, 64), torch.rand(5, 1, 32, 32)  # dynamic batch size
    assert net(images, views).shape == (5, 128)


def test_documented_ckpt_export_command(trained, tmp_path):
    root, _ = trained
    text = (ROOT / "docs/encoder.md").read_text()
    block = re.search(r"```bash\n(python -m monai.bundle ckpt_export.*?)```", text, re.S).group(1)
    args = block.replace("\\\n", " ").split()[3:]  # after "python -m monai.bundle"
    args = [str(tmp_path / "encoder.ts") if a == "models/encoder.ts" else a for a in args]
    args = [str(root / a) if a.startswith("models/") else a for a in args]
    architecture = [a for k, v in ARCH.items() for a in (f"--{k}", json.dumps(v))]
    command = [sys.executable, "-m", "monai.bundle", *args, *architecture]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = torch.jit.load(str(tmp_path / "encoder.ts"))
    reference = torch.jit.load(str(root / "models/encoder.ts"))
    images, views = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 32, 32)
    assert torch.allclose(loaded(images, views), reference(images, views), atol=1e-6)


def _python_blocks(path: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))


@pytest.mark.parametrize("site", [0, 2])  # grey (Hosp-1) and colour (Hosp-3) exports
def test_docs_snippet_embeds_with_only_torch_and_onnxruntime(trained, exported, tmp_path, site):
    from bundle.data.readers import read_image
    from bundle.data.roi_zoom import ROIZoom
    from bundle.data.transforms import LetterboxGeometry, letterbox_image

    root, _ = trained
    image = sorted((root / "data/images" / f"site{site}").glob("*.png"))[0]
    (tmp_path / "models").mkdir()
    for name in ("encoder.ts", "encoder.onnx"):
        shutil.copy(exported / name, tmp_path / "models" / name)
    shutil.copy(image, tmp_path / "image.png")
    entry = next(
        e for e in json.loads((root / "data/datalist.json").read_text())["data"] if e["image"].endswith(image.name)
    )
    (tmp_path / "datalist.json").write_text(json.dumps({"data": [{"image": "image.png", "roi": entry["roi"]}]}))
    guard = "import sys\nsys.modules['bundle'] = None  # the snippet must not need the bundle\n"
    save = "\nimport numpy\nnumpy.save('z_ts.npy', z.numpy())\nnumpy.save('z_onnx.npy', z_onnx)\n"
    script = tmp_path / "snippet.py"
    script.write_text(guard + _python_blocks(ROOT / "docs/encoder.md") + save)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    array = torch.from_numpy(read_image(image).array)[None]
    canvas = letterbox_image(array, LetterboxGeometry.compute(array.shape[2], array.shape[1], 64))
    view, _ = ROIZoom(32, 0.5)(array, entry["roi"])
    expected = torch.jit.load(str(exported / "encoder.ts"))(canvas[None], view[None]).detach().numpy()
    assert np.abs(np.load(tmp_path / "z_ts.npy") - expected).max() <= 1e-5
    assert np.abs(np.load(tmp_path / "z_onnx.npy") - expected).max() <= 1e-5


def test_probe_workflow_writes_the_report(trained):
    root, settings = trained
    workflow = ConfigWorkflow(
        config_file=[CONFIG, PROBES],
        workflow_type="train",
        run_id="probes",
        **settings,
        **{"probe#settings#umap": False},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    report = root / "runs/quick/probes"
    metrics = json.loads((report / "probes.json").read_text())["metrics"]
    for phase in ("phase1", "phase2"):
        provenance = metrics[phase]["provenance"]
        assert provenance["n_sources"] == 2 and 0 <= provenance["held_out_entropy"] <= np.log(2) + 1e-9
        assert 0.5 <= provenance["held_out_max_softmax"] <= 1.0
        assert {"auroc_mahalanobis", "auroc_knn_k1", "auroc_knn_k5", "auroc_knn_k10"} <= set(metrics[phase]["ood"])
        assert all(0 <= metrics[phase]["ood"][k] <= 1 for k in metrics[phase]["ood"] if k.startswith("auroc"))
        assert {"r2", "spearman", "mae"} <= set(metrics[phase]["quality"])
    for name in ("probes.md", "embedding_pca.png", "ood_scores.png", "interpolation.png", "perturbation.png"):
        assert (report / name).stat().st_size > 0, name
    assert "0.556 -> 0.541" in (report / "probes.md").read_text()  # the paper's figure quoted beside ours


def test_score_cli_on_a_datalist_and_a_folder_with_a_corrupt_image(trained, exported, tmp_path, capsys):
    root, _ = trained
    output = tmp_path / "scores.csv"
    datalist = root / "data/datalist.json"
    assert (
        main(["score", str(datalist), "--encoder", str(exported / "encoder.ts"), "--output", str(output), "--quiet"])
        == 0
    )
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == len(json.loads(datalist.read_text())["data"])
    assert all(np.isfinite(float(r["ood_mahalanobis"])) and r["ood_flag"] in ("True", "False") for r in rows)
    folder = tmp_path / "folder"
    folder.mkdir()
    for image in sorted((root / "data/images/site2").glob("*.png"))[:3]:
        shutil.copy(image, folder / image.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    latents = tmp_path / "latents.npz"
    args = ["score", str(datalist), "--encoder", str(exported / "encoder.onnx"), "--output", str(output)]
    assert main([*args, "--latents", str(latents), "--quiet"]) == 0
    assert np.load(latents)["z"].shape == (len(rows), 128)
    args = ["score", str(folder), "--encoder", str(exported / "encoder.onnx"), "--output", str(output)]
    assert main([*args, "--quiet", "--localizer", str(tmp_path / "no_localizer.pt")]) == 0
    rows = {r["case_id"]: r for r in csv.DictReader(output.open())}
    assert len(rows) == 4 and "broken.png" in rows["broken"]["error"] and rows["broken"]["ood_knn"] == ""
    # a plain folder has no NT boxes and here no localiser: the dual-view encoder names each image and the fix
    # (with the localiser: tests/test_localizer.py)
    assert all("no NT box" in r["error"] and r["ood_knn"] == "" for k, r in rows.items() if k != "broken")
    assert "4 not scored" in capsys.readouterr().out


def test_score_refuses_a_scorer_of_another_encoder_and_a_zero_batch(trained, exported, tmp_path, capsys):
    from bundle.latent.scoring import save_scorer

    root, _ = trained
    scorer = load_scorer(exported / "scorer.npz")
    assert len(scorer.info["encoder_sha256"]) == 64  # the run's encoder, embedded in every export too
    scorer.info["encoder_sha256"] = "0" * 64  # a scorer of another training run
    other = tmp_path / "other_scorer.npz"
    save_scorer(other, scorer)
    datalist = str(root / "data/datalist.json")
    args = ["score", datalist, "--encoder", str(exported / "encoder.ts"), "--quiet"]
    args += ["--output", str(tmp_path / "s.csv")]
    assert main([*args, "--scorer", str(other)]) == 2
    assert "fitted on the latents of another encoder" in capsys.readouterr().err
    assert main([*args, "--batch-size", "0"]) == 2
    assert "batch size 0: give a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_predicted_roi_error_stays_inside_the_training_range(trained):
    root, _ = trained
    scorer = load_scorer(root / "models/scorer.npz")
    far = np.random.default_rng(0).normal(0, 50, size=(20, 128))  # latents far outside anything seen
    predicted = scorer.score(far)["predicted_roi_edge_mae"]
    low, high = scorer.quality_range()
    assert low >= 0 and (predicted >= low).all() and (predicted <= high).all()


def test_export_without_a_checkpoint_says_how_to_make_one(tmp_path, capsys):
    assert main(["export", "--output-dir", str(tmp_path)]) == 2
    assert "train first" in capsys.readouterr().err
