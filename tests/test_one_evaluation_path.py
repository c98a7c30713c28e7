"""Issue 33.2: the main job's report and ``run evaluating`` compute their rows the same way."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle.data.geometry import batch_geometries, geometries_of
from bundle.evaluation.fidelity import OriginalNT

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path, **where) -> dict[str, dict]:
    with open(path) as handle:
        return {r["case_id"]: r for r in csv.DictReader(handle) if all(r[k] == v for k, v in where.items())}


def test_run_evaluating_reproduces_the_reports_phase2_rows(tiny_trained, tmp_path):
    from monai.bundle import ConfigWorkflow

    root, settings = tiny_trained
    configs = [str(ROOT / "configs/train.json"), str(ROOT / "configs/evaluate.json")]
    overrides = {"evaluate#data": "$@split['held_out']", "evaluate_output_dir": str(tmp_path)}
    workflow = ConfigWorkflow(config_file=configs, workflow_type="eval", run_id="evaluating", **settings, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    report = root / "runs/quick/report"
    expected = _rows(report / "per_image.csv", phase="phase2", split="held_out")
    evaluated = _rows(tmp_path / "per_image.csv")
    assert evaluated and set(evaluated) == set(expected)
    for case, row in evaluated.items():
        for metric in ("psnr", "ms_ssim", "roi_mae", "roi_edge_mae", "zoom_roi_mae"):
            # the same savers on the same weights; run evaluating feeds channels-last inputs (float rounding only)
            value = float(expected[case][metric])
            assert float(row[metric]) == pytest.approx(value, rel=1e-4, abs=1e-6), (case, metric)
    nt_expected = _rows(report / "fidelity.csv", phase="phase2", split="held_out", roi_source="given")
    nt_evaluated = _rows(tmp_path / "fidelity.csv")
    assert set(nt_evaluated) == set(nt_expected)
    for case, row in nt_evaluated.items():
        assert row["nt_original_mm"] == nt_expected[case]["nt_original_mm"]  # the same original, measured alike
        assert bool(row["nt_recon_mm"]) == bool(nt_expected[case]["nt_recon_mm"])


def test_geometry_is_decoded_alike_from_both_collations():
    letterbox = [
        {"canvas_size": 64, "scale": 0.5, "dx": 0, "dy": 8, "resized_size": [64, 48], "original_size": [128, 96]},
        {"canvas_size": 64, "scale": 0.25, "dx": 4, "dy": 0, "resized_size": [56, 64], "original_size": [224, 256]},
    ]
    per_item = {"case_id": ["a", "b"], "letterbox": letterbox, "roi_zoom": [None, None]}
    collated = {
        "case_id": ["a", "b"],
        "letterbox": {
            "canvas_size": torch.tensor([64, 64]),
            "scale": torch.tensor([0.5, 0.25], dtype=torch.float64),
            "dx": torch.tensor([0, 4]),
            "dy": torch.tensor([8, 0]),
            "resized_size": [torch.tensor([64, 56]), torch.tensor([48, 64])],
            "original_size": [torch.tensor([128, 224]), torch.tensor([96, 256])],
        },
    }
    decoded = batch_geometries(collated)
    for i in range(2):
        assert geometries_of(per_item, i) == decoded[i]
        assert decoded[i][1] is None


def test_each_original_is_read_once(monkeypatch, tmp_path):
    import bundle.evaluation.fidelity as fidelity

    reads = []
    monkeypatch.setattr(fidelity, "read_native", lambda entry: reads.append(entry["image"]) or np.zeros((8, 8)))
    measured = OriginalNT()
    entry = {"image": "a.png", "roi": [1, 2, 5, 6], "pixel_spacing_mm": [0.1, 0.1]}
    first = measured(entry)
    assert measured(dict(entry)) is first and reads == ["a.png"]
    measured({**entry, "roi": [1, 2, 6, 6]})  # another box is another measurement
    assert reads == ["a.png", "a.png"]
