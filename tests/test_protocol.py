"""The evaluation protocol and the evaluate overlay on tiny runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from bundle.protocol.runner import run_protocol
from bundle.protocol.variants import ProtocolSettings
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]


def test_protocol_writes_the_full_report_for_rotations_seeds_and_ablations(tmp_path, tiny_training):
    settings = ProtocolSettings(
        output_dir=tmp_path / "protocol",
        dataset_dir=tmp_path / "data",
        sites=[2],
        seeds=[0, 1],
        variants=["roi_cae", "equal_weights", "paper_model"],
        ablation_sites=[2],
        phase1_epochs=2,
        phase2_epochs=2,
        overrides=tiny_training,
    )
    markdown = run_protocol(settings).read_text()
    sections = ("paper's form", "confidence intervals", "Ablations", "ROI jitter", "measurement fidelity", "probes per")
    for section in sections:
        assert section in markdown, section
    report = json.loads((tmp_path / "protocol/report/protocol.json").read_text())
    comparison = report["summary"]["rotations"]["2"]["held_out"]["roi_mae"]["phase2_minus_phase1"]
    assert comparison["n"] == 12 and 0 <= comparison["p_value"] <= 1  # 6 held-out images x 2 seeds
    assert set(report["summary"]["ablations"]["2"]) == {"equal_weights", "paper_model"}
    fidelity = report["fidelity"]
    assert {"roi_cae", "paper_model"} <= set(fidelity)
    held_out = fidelity["roi_cae"]["2"]["held_out"]["all_planes"]["phase2"]
    assert held_out["n"] == 12 and 0 <= held_out["measurable_pct"] <= 100
    assert len(held_out["abs_diff_median_mm_ci"]) == 2 or held_out["measurable_pct"] == 0
    jitter = report["jitter"]["2"]["held_out"]
    assert {"exact", "shift 2 px", "shift 4 px", "shift 8 px", "scale 0.8", "scale 1.2"} == set(jitter)
    assert jitter["exact"]["phase1"] != jitter["exact"]["phase2"]  # two different checkpoints
    assert 0 <= report["probes"]["2"]["phase2"]["Mahalanobis AUROC"] <= 1
    assert (tmp_path / "protocol/runs/heldout2_seed1/roi_cae/runs/quick/probes/probes.json").exists()
    assert (tmp_path / "protocol/report/distributions.png").exists()
    assert ("nt_fidelity.png" in markdown) == (tmp_path / "protocol/report/nt_fidelity.png").exists()
    assert (tmp_path / "protocol/report/fidelity.csv").exists()
    # The variant reused the method's phase 1 instead of retraining it.
    variant_log = (tmp_path / "protocol/runs/heldout2_seed0/equal_weights/protocol_run.log").read_text()
    assert "phase 1: already complete" in variant_log
    # A second call resumes: nothing is retrained.
    before = (tmp_path / "protocol/runs/heldout2_seed0/roi_cae/models/model.pt").stat().st_mtime
    run_protocol(settings)
    assert (tmp_path / "protocol/runs/heldout2_seed0/roi_cae/models/model.pt").stat().st_mtime == before


def test_the_paper_model_runs_on_every_rotation_and_other_ablations_only_on_theirs(tmp_path):
    settings = ProtocolSettings(
        output_dir=tmp_path,
        dataset_dir=tmp_path / "data",
        sites=[0, 1, 2],
        seeds=[0, 1],
        variants=["roi_cae", "equal_weights", "paper_model"],
        ablation_sites=[2],
    )
    jobs = settings.jobs()
    for site in (0, 1, 2):
        for seed in (0, 1):
            assert (site, seed, "roi_cae") in jobs and (site, seed, "paper_model") in jobs
            assert ((site, seed, "equal_weights") in jobs) == (site == 2)


def test_run_folders_follow_the_preset_and_models_dir_overrides(tmp_path):
    settings = ProtocolSettings(tmp_path, tmp_path / "data", [2], [0], ["roi_cae"], [2])
    root = settings.run_dir(2, 0, "roi_cae")
    assert settings.run_paths(2, 0, "roi_cae") == (root / "runs/quick", root / "models")
    settings.overrides = {"preset": "long", "models_dir": str(tmp_path / "weights")}
    assert settings.run_paths(2, 0, "roi_cae") == (root / "runs/long", tmp_path / "weights")


def test_fidelity_pools_every_rotation_after_the_per_rotation_figures(tmp_path):
    settings = ProtocolSettings(tmp_path, tmp_path / "data", [0, 2], [0], ["roi_cae"], [])
    columns = ("phase", "split", "case_id", "site", "standard_plane", "nt_true_mm", "nt_original_mm", "nt_recon_mm")
    for site, recon in ((0, 2.3), (2, 1.9)):  # biases +0.3 and -0.1 mm: pooled +0.1 mm
        report = settings.run_paths(site, 0, "roi_cae").output / "report"
        report.mkdir(parents=True)
        with open(report / "fidelity.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(("phase2", "held_out", f"s{site}_{i}", site, True, 2.0, 2.0, recon) for i in range(5))
    from bundle.protocol.studies import POOLED, fidelity_study

    summary = fidelity_study(settings)["summary"]["roi_cae"]
    assert list(summary) == [0, 2, POOLED]
    figures = {site: summary[site]["held_out"]["standard_planes"]["phase2"] for site in summary}
    assert (figures[0]["n"], figures[2]["n"], figures[POOLED]["n"]) == (5, 5, 10)
    assert abs(figures[0]["bias_mm"] - 0.3) < 1e-9 and abs(figures[POOLED]["bias_mm"] - 0.1) < 1e-9
    assert figures[POOLED]["abs_diff_p90_mm_ci"][1] <= 0.3 + 1e-9


def test_evaluate_overlay_writes_per_image_and_per_site_metrics(tmp_path, tiny_training):
    settings = {
        "bundle_root": str(tmp_path),
        "dataset_dir": str(tmp_path / "data"),
        **tiny_training,
        "phase1_epochs": 1,
    }
    # MONAI's default run id "run", as the zoo's unit-test template calls both workflows
    train = ConfigWorkflow(config_file=str(ROOT / "configs/train.json"), workflow_type="train", **settings)
    train.initialize()
    train.run()
    assert (tmp_path / "models/model.pt").is_file()  # "run" trained
    configs = [str(ROOT / "configs/train.json"), str(ROOT / "configs/evaluate.json")]
    evaluate = ConfigWorkflow(config_file=configs, workflow_type="train", **settings)
    evaluate.initialize()
    assert evaluate.check_properties() in (None, [])
    evaluate.run()
    out = tmp_path / "runs/quick/evaluation"
    with open(out / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 18 and {"psnr", "ssim_content", "roi_edge_mae"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"all", "site0", "site1", "site2"} and summary["all"]["n"] == 18
    # NT measurement fidelity of the checkpoint on the evaluated entries, as the training report has it
    with open(out / "fidelity.csv") as handle:
        measured = list(csv.DictReader(handle))
    assert len(measured) == 18 and {"case_id", "nt_original_mm", "nt_recon_mm", "standard_plane"} <= set(measured[0])
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert fidelity["all_planes"]["n"] == 18 and 0 < fidelity["standard_planes"]["n"] <= 18
    measurable = sum(1 for row in measured if row["nt_original_mm"])
    assert measurable > 0  # 128 px images: the band is measurable on some originals only
    assert fidelity["all_planes"]["original_measurable_pct"] == pytest.approx(100 * measurable / 18)


def test_fidelity_figure_plots_held_out_standard_planes_and_skips_when_none(tmp_path):
    from bundle.protocol.writeup import fidelity_figure

    def row(variant, recon, split="held_out", plane="True"):
        return {
            "variant": variant, "held_out_site": "2", "split": split, "phase": "phase2", "standard_plane": plane,
            "nt_original_mm": 1.5, "nt_recon_mm": recon,
        }  # fmt: skip

    unusable = [row("roi_cae", 1.6, split="val"), row("roi_cae", 1.6, plane="False"), row("paper_model", None)]
    assert fidelity_figure(unusable, tmp_path, {2: "Hosp-3"}) is None
    assert not (tmp_path / "nt_fidelity.png").exists()
    path = fidelity_figure([*unusable, row("roi_cae", 1.7), row("paper_model", 9.0)], tmp_path, {2: "Hosp-3"})
    assert path == tmp_path / "nt_fidelity.png" and path.stat().st_size > 1000
