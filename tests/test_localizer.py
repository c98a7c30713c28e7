"""Issue 31: the NT localiser (box maths, decoding, training pieces) and NT agreement (Bland-Altman, null baselines)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle.cli import main
from bundle.evaluation.agreement import HUMAN_ANCHORS, agreement_rows, bland_altman, inside_target, shuffled_within_site
from bundle.evaluation.localization import box_agreement, localization_summary, nt_free_strip
from bundle.model.localizer import STRIDE, LocalizeNTd, NTLocalizer, clip_box, decode_heatmap
from bundle.training.localizer import coarse_loss, crop_native, fit_threshold, heatmap_targets
from conftest import TINY_ARCH, inference_command
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]


# --- box maths on hand-made boxes ---------------------------------------------------------------------------------


def test_iou_and_centre_error_of_hand_made_boxes():
    same = box_agreement([10, 20, 30, 40], [10, 20, 30, 40], [0.1, 0.1])
    assert same == {"iou": 1.0, "centre_error_px": 0.0, "centre_error_mm": 0.0}
    half = box_agreement([0, 0, 10, 10], [5, 0, 15, 10], [0.1, 0.2])  # overlap 50 of a union of 150
    assert half["iou"] == pytest.approx(1 / 3)
    assert half["centre_error_px"] == pytest.approx(5.0)
    assert half["centre_error_mm"] == pytest.approx(5 * 0.2)  # columns use the second spacing
    apart = box_agreement([0, 0, 10, 10], [0, 20, 10, 30], [0.1, 0.2])
    assert apart["iou"] == 0.0 and apart["centre_error_mm"] == pytest.approx(20 * 0.1)
    assert box_agreement([0, 0, 10, 10], [0, 0, 10, 10], None)["centre_error_mm"] is None


def test_boxes_are_ordered_clipped_and_never_empty():
    assert clip_box([30, 40, 10, 20], 100, 100) == [10.0, 20.0, 30.0, 40.0]
    assert clip_box([-5, -5, 200, 50], 100, 80) == [0.0, 0.0, 100.0, 50.0]
    tiny = clip_box([99.5, 10, 99.6, 10.2], 100, 100)
    assert tiny[2] - tiny[0] >= 2 and tiny[3] - tiny[1] >= 2 and tiny[2] <= 100


def test_nt_free_strip_never_touches_the_box():
    box = [300.0, 200.0, 420.0, 260.0]
    strip = nt_free_strip(box, 960, 720)
    assert strip == [0, 260, 960, 720]  # below the box: 460 of 720 rows (64 %) beats 540 of 960 columns (56 %)
    assert strip[2] <= box[0] or strip[0] >= box[2] or strip[3] <= box[1] or strip[1] >= box[3]
    assert nt_free_strip([5, 5, 95, 95], 100, 100) is None  # every strip is thinner than 30 %


def test_heatmap_targets_decode_back_to_their_boxes():
    boxes = [[21.0, 30.5, 45.0, 41.0], [60.2, 70.0, 100.0, 90.0], None]
    targets = heatmap_targets(boxes, 128)
    assert targets["heat"].shape == (3, 128 // STRIDE, 128 // STRIDE) and targets["heat"][2].max() == 0
    maps = torch.zeros(3, 5, 32, 32)
    maps[:, 0] = torch.logit(targets["heat"].clamp(1e-4, 1 - 1e-4))
    for i in range(2):
        row, col = divmod(int(targets["index"][i]), 32)
        maps[i, 1:, row, col] = targets["regression"][i]
    decoded, confidence = decode_heatmap(maps)
    for i in range(2):
        assert decoded[i].tolist() == pytest.approx(boxes[i], abs=1e-3)
        assert float(confidence[i]) > 0.99
    assert float(confidence[2]) < 0.01  # an NT-free view: no peak


def test_focal_loss_rewards_the_right_peak():
    targets = heatmap_targets([[40.0, 40.0, 60.0, 52.0]], 128)
    right, wrong = torch.full((1, 5, 32, 32), -6.0), torch.full((1, 5, 32, 32), -6.0)
    row, col = divmod(int(targets["index"][0]), 32)
    right[0, 0, row, col] = 6.0
    right[0, 1:, row, col] = targets["regression"][0]
    wrong[0, 0, 2, 2] = 6.0
    assert coarse_loss(right, targets) < 0.1 < coarse_loss(wrong, targets)


def test_crop_outside_the_image_is_zero():
    image = torch.ones(1, 10, 20)
    crop = crop_native(image, [-5, 5, 5, 15])
    assert crop.shape == (1, 10, 10)
    assert crop[:, :5, 5:].sum() == 25 and crop[:, :, :5].sum() == 0 and crop[:, 5:].sum() == 0


def test_threshold_separates_hand_made_confidences():
    threshold, balanced = fit_threshold([0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.65])
    assert balanced == pytest.approx(0.5 * (1.0 + 2 / 3)) or balanced == pytest.approx(0.5 * (0.75 + 1.0))
    perfect, score = fit_threshold([0.9, 0.8], [0.1, 0.2])
    assert 0.2 < perfect < 0.8 and score == 1.0


def test_localization_summary_counts_visibility_by_plane():
    rows = [
        {"iou": 0.8, "centre_error_mm": 0.2, "centre_error_px": 2, "visible": True, "standard_plane": True,
         "nt_free_visible": False},
        {"iou": 0.4, "centre_error_mm": 1.0, "centre_error_px": 9, "visible": True, "standard_plane": True,
         "nt_free_visible": True},
        {"iou": 0.6, "centre_error_mm": 0.4, "centre_error_px": 4, "visible": False, "standard_plane": False,
         "nt_free_visible": None},
    ]  # fmt: skip
    summary = localization_summary(rows)
    assert summary["iou_median"] == 0.6 and summary["iou_ge_0.5_pct"] == pytest.approx(200 / 3)
    assert summary["visible_standard_pct"] == 100.0 and summary["visible_nonstandard_pct"] == 0.0
    assert summary["nt_free_called_absent_pct"] == 50.0
    assert summary["visibility_balanced_accuracy"] == pytest.approx(0.5 * (2 / 3 + 0.5))


# --- Bland-Altman and the null baselines ------------------------------------------------------------------------


def test_bland_altman_of_hand_made_pairs():
    original = [1.0, 1.5, 2.0, 2.5, 3.0]
    measured = [1.1, 1.4, 2.2, 2.5, 3.3]  # differences +0.1, -0.1, +0.2, 0, +0.3
    figures = bland_altman(measured, original)
    d = np.array([0.1, -0.1, 0.2, 0.0, 0.3])
    assert figures["n"] == 5 and figures["bias_mm"] == pytest.approx(d.mean())
    assert figures["sd_mm"] == pytest.approx(d.std(ddof=1))
    assert figures["loa_low_mm"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    assert figures["loa_high_mm"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert figures["abs_median_mm"] == pytest.approx(0.1) and figures["within_0.54mm_pct"] == 100.0
    assert inside_target(figures) and not inside_target({"loa_low_mm": -0.6, "loa_high_mm": 0.1})
    assert bland_altman([1.0, None], [1.0, 2.0])["n"] == 1  # a missing measurement drops its pair
    assert math.isnan(bland_altman([1.0], [1.0])["bias_mm"])


def test_human_anchors_are_the_published_figures():
    limits = {label.split(",")[0] + label.split(",")[1][:4]: limit for label, limit, _ in HUMAN_ANCHORS}
    assert [round(v, 2) for v in limits.values()] == [0.54, 0.62, 0.35, 0.14]


def test_shuffled_pairs_stay_within_their_site_and_constant_uses_each_sites_median():
    rows = [{"site": s, "nt_original_mm": 1.0 + i, "nt_recon_mm": 10.0 * s + i} for s in (0, 1) for i in range(6)]
    shuffled = shuffled_within_site(rows, seed=3)
    for site in (0, 1):
        own = [r["nt_recon_mm"] for r in rows if r["site"] == site]
        got = [v for v, r in zip(shuffled, rows, strict=True) if r["site"] == site]
        assert sorted(got) == sorted(own) and got != own  # a permutation of the site's own values
    table = agreement_rows({"model": rows}, {0: 2.0, 1: 5.0})
    constant = {r["site"]: r for r in table if r["method"] == "constant NT (null)"}
    assert constant[0]["bias_mm"] == pytest.approx(2.0 - np.mean([1.0 + i for i in range(6)]))
    assert constant[1]["bias_mm"] == pytest.approx(5.0 - np.mean([1.0 + i for i in range(6)]))
    assert {r["method"] for r in table} == {"model", "constant NT (null)", "shuffled pairs (null)"}
    assert {r["site"] for r in table} == {0, 1, "all"}


def test_a_faithful_model_beats_both_nulls():
    rng = np.random.default_rng(0)
    original = rng.lognormal(np.log(1.6), 0.35, 200)
    rows = [{"site": 0, "nt_original_mm": o, "nt_recon_mm": o + rng.normal(0, 0.05)} for o in original]
    table = {r["method"]: r for r in agreement_rows({"model": rows}, float(np.median(original)))}
    assert inside_target(table["model"])
    assert not inside_target(table["constant NT (null)"]) and not inside_target(table["shuffled pairs (null)"])


# --- the localiser in the transforms and on the command line ------------------------------------------------------


def _confident_copy(models: Path, target: Path, threshold: float) -> Path:
    """A copy of a models folder whose localiser calls every image ``threshold``-confident (tiny nets are unsure)."""
    shutil.copytree(models, target)
    info_path = target / "localizer.json"
    info = json.loads(info_path.read_text())
    info["settings"]["threshold"] = threshold
    info_path.write_text(json.dumps(info))
    return target


def test_a_given_box_always_wins_and_a_missing_localiser_leaves_the_item_alone(tiny_trained, tmp_path):
    root, _ = tiny_trained
    image = torch.rand(1, 64, 64)
    models = _confident_copy(root / "models", tmp_path / "models", 0.0)
    transform = LocalizeNTd(localizer_path=models / "localizer.pt")
    given = transform({"image": image, "roi": [10, 10, 30, 20]})
    assert given["roi_source"] == "given" and given["roi"] == [10, 10, 30, 20] and given["roi_confidence"] is None
    predicted = transform({"image": image, "roi": None})
    assert predicted["roi_source"] == "predicted" and len(predicted["roi"]) == 4 and predicted["nt_box"]
    unsure = LocalizeNTd(localizer_path=_confident_copy(root / "models", tmp_path / "strict", 1.01) / "localizer.pt")
    none = unsure({"image": image, "roi": None})
    assert none["roi_source"] == "none" and none["roi"] is None and "no NT found" in none["no_nt"]
    absent = LocalizeNTd(localizer_path=tmp_path / "nothing.pt")({"image": image, "roi": None})
    assert absent["roi_source"] == "none" and absent["no_nt"] is None and absent["roi"] is None


def test_inference_and_score_on_a_folder_without_boxes(tiny_trained, tmp_path, capsys):
    """The README's inference example on native PNGs without boxes: every row reconstructed with a predicted box."""
    root, _ = tiny_trained
    models = _confident_copy(root / "models", tmp_path / "models", 0.0)
    folder = tmp_path / "scans"
    folder.mkdir()
    for image in sorted((root / "data/images/site2").glob("*.png"))[:4]:
        shutil.copy(image, folder / image.name)
    out = tmp_path / "out"
    done = subprocess.run(inference_command(models, folder, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"} and {r["roi_source"] for r in rows} == {"predicted"}
    assert all(Path(r["reconstruction"]).exists() and len(json.loads(r["nt_box"])) == 4 for r in rows)
    assert "4 reconstructed (4 with a predicted NT box)" in done.stdout + done.stderr

    arch = ["--set", *(f"{k}={json.dumps(v)}" for k, v in TINY_ARCH.items())]
    assert main(["export", "--output-dir", str(models), "--formats", "ts", *arch]) == 0
    score = ["score", str(folder), "--encoder", str(models / "encoder.ts"), "--output", str(tmp_path / "s.csv")]
    assert main([*score, "--quiet"]) == 0
    assert "4 scored (4 with a predicted NT box)" in capsys.readouterr().out

    strict = _confident_copy(root / "models", tmp_path / "strict", 1.01)  # in-process: the same config and writer
    out = tmp_path / "strict_out"
    settings = {"dataset_dir": str(folder), "output_dir": str(out), "models_dir": str(strict), **TINY_ARCH}
    workflow = ConfigWorkflow(config_file=str(ROOT / "configs/inference.json"), workflow_type="infer", **settings)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = json.loads((out / "results.json").read_text())
    assert {r["status"] for r in rows} == {"no_nt"} and all("no NT found" in r["note"] for r in rows)
    assert not any(r["error"] for r in rows)  # not "unreadable"


def test_exported_image_encoder_matches_the_bundle(tiny_trained, tmp_path, monkeypatch, capsys):
    """``image_encoder.ts`` (torch alone) and ``.onnx`` (onnxruntime alone) give the bundle's latent and box."""
    import onnxruntime
    from bundle.data.readers import read_image
    from bundle.deploy.inference import Reconstructor

    root, _ = tiny_trained
    models = _confident_copy(root / "models", tmp_path / "models", 0.0)
    arch = ["--set", *(f"{k}={json.dumps(v)}" for k, v in TINY_ARCH.items())]
    assert main(["export", "--output-dir", str(models), "--formats", "image", "image_onnx", *arch]) == 0
    reconstructor = Reconstructor(overrides={"models_dir": str(models), **TINY_ARCH})
    scripted = torch.jit.load(str(models / "image_encoder.ts"))
    session = onnxruntime.InferenceSession(str(models / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    for path in [sorted((root / f"data/images/site{s}").glob("*.png"))[0] for s in (0, 2)]:
        grey = read_image(path).array.astype(np.float32)
        expected = reconstructor.run(path)
        assert expected["roi_source"] == "predicted"
        latent, box, confidence = scripted(torch.from_numpy(grey))
        onnx_latent, onnx_box, onnx_confidence = session.run(None, {"image": grey})
        for got, got_box, got_confidence in ((latent.numpy(), box.tolist(), float(confidence)),
                                             (onnx_latent, onnx_box.tolist(), float(onnx_confidence))):  # fmt: skip
            assert np.abs(got - expected["latent"]).max() < 1e-4
            assert got_box == pytest.approx(expected["nt_box"], abs=0.02)
            assert got_confidence == pytest.approx(expected["roi_confidence"], abs=1e-3)

    # the docs' 10-line examples, as a user runs them: only torch / onnxruntime, models/ and scan.png in the folder
    work = tmp_path / "user"
    work.mkdir()
    (work / "models").symlink_to(models)
    shutil.copy(path, work / "scan.png")
    monkeypatch.chdir(work)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/localizer.md").read_text(), re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/localizer.md", "exec"), {})
    shown = capsys.readouterr().out
    assert "torch.Size([128])" in shown and "(128,)" in shown


def test_the_main_job_report_carries_the_localiser_and_agreement(tiny_trained):
    root, settings = tiny_trained
    metrics = json.loads((Path(settings["bundle_root"]) / "runs/quick/report/metrics.json").read_text())
    assert set(metrics["localization"]) == {"val", "held_out"}
    assert {"iou_ge_0.5_pct", "centre_error_median_mm", "visibility_balanced_accuracy"} <= set(
        metrics["localization"]["held_out"]["standard_planes"]
    )
    methods = {r["method"] for r in metrics["nt_agreement"]["held_out"]}
    assert {"phase2", "constant NT (null)", "shuffled pairs (null)"} <= methods
    assert metrics["constant_nt_mm"] > 0
    text = (root / "runs/quick/report/metrics.md").read_text()
    assert text.startswith("# Reconstruction report\n\n## Headline: the unseen hospital")
    assert "NT agreement (Bland-Altman)" in text and "Pandya 1995" in text and "NT localiser" in text
    assert (root / "runs/quick/report/bland_altman.png").exists()
    info = json.loads((root / "models/localizer.json").read_text())
    assert 0.0 <= info["settings"]["threshold"] <= 1.0 and info["training"]["epochs"] == 2


def test_localizer_weights_load_safely(tiny_trained, tmp_path):
    from bundle.model.localizer import load_localizer
    from bundle.utils.checkpoints import UnsafeCheckpointError

    root, _ = tiny_trained
    assert isinstance(load_localizer(root / "models/localizer.pt"), NTLocalizer)
    evil = tmp_path / "localizer.pt"
    torch.save({"x": np.float64}, evil)  # a pickle that names a class: refused, never unpickled
    with pytest.raises(UnsafeCheckpointError):
        load_localizer(evil)
    with pytest.raises(UnsafeCheckpointError):  # at construction: the run stops with this message, not in a loader
        LocalizeNTd(localizer_path=evil)
    with pytest.raises(FileNotFoundError, match="train_localizer"):
        load_localizer(tmp_path / "missing.pt")


def test_protocol_tables_of_the_localiser_and_agreement():
    from bundle.protocol.writeup import _agreement_table

    figures = {
        "n": 105, "iou_median": 0.88, "iou_ge_0.5_pct": 99.0, "centre_error_median_mm": 0.36,
        "centre_error_p90_mm": 0.85, "visible_standard_pct": 98.1, "visible_nonstandard_pct": 80.0,
        "nt_free_called_absent_pct": 100.0, "visibility_balanced_accuracy": 0.99,
    }  # fmt: skip
    rows = [{"site": 2, "nt_original_mm": 1.0 + 0.1 * i, "nt_recon_mm": 1.05 + 0.1 * i} for i in range(10)]
    agreement = {
        "localization": {2: {"standard_planes": figures, "all_planes": figures}},
        "rows": agreement_rows({"phase2": rows}, {2: 1.4}),
        "constant_nt_mm": {2: 1.4},
    }
    text = "\n".join(_agreement_table(agreement, {2: "Hosp-3"}))
    assert (
        "| Hosp-3 | standard planes | 105 | 0.880 | 99.0 % | 0.360 mm | 0.850 mm | 98.1 % | 100.0 % | 0.990 |" in text
    )
    assert "| Hosp-3 | all planes | 105 |" in text and "98.1 % / 80.0 %" in text
    assert "| phase2 | Hosp-3 | 10 | +0.050 mm |" in text and "constant NT (null)" in text and "Hosp-3 1.400 mm" in text
