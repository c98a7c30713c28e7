"""Issue 32.5: ``metrics.md`` opens with a headline: held-out NT agreement, NT error, PSNR and ROI error vs targets."""

from __future__ import annotations

from bundle.evaluation.report import headline_markdown


def _metrics(loa=(-0.2, 0.3), median=0.08, gain=0.5, change=-8.0) -> dict:
    return {
        "held_out_site": 2,
        "phase2_minus_phase1": {
            "held_out": {
                "psnr": {"absolute": gain, "relative_pct": 3.0},
                "roi_mae": {"absolute": -0.01, "relative_pct": change},
            }
        },
        "nt_agreement": {
            "held_out": [
                {"method": "phase2", "site": 2, "n": 100, "loa_low_mm": loa[0], "loa_high_mm": loa[1]},
                {"method": "constant NT (null)", "site": 2, "n": 100, "loa_low_mm": -2.0, "loa_high_mm": 2.0},
            ]
        },
        "nt_fidelity": {"phase2": {"held_out": {"standard_planes": {"n": 100, "abs_diff_median_mm": median}}}},
    }


def test_headline_judges_each_figure_against_its_target():
    text = headline_markdown(_metrics())
    assert text.startswith("## Headline: the unseen hospital (site 2)")
    assert "-0.200 to +0.300 mm | inside +-0.54 mm | met" in text
    assert "0.080 mm | <= 0.10 mm | met" in text and "+0.50 dB | >= +0.29 dB (paper) | met" in text
    assert "-8.00 % | <= -6.43 % (paper) | met" in text and "missed" not in text
    bad = headline_markdown(_metrics(loa=(-0.7, 0.3), median=0.2, gain=0.1, change=-1.0))
    assert bad.count("**missed**") == 4


def test_no_held_out_split_no_headline():
    assert headline_markdown({"phase2_minus_phase1": {}}) == ""


def test_nt_crops_show_best_median_and_worst_per_plane_on_the_held_out_site():
    from bundle.evaluation.report import chosen_cases

    def row(case, error, standard, split="held_out", phase="phase2"):
        return {
            "phase": phase,
            "split": split,
            "case_id": case,
            "standard_plane": standard,
            "nt_original_mm": 2.0,
            "nt_recon_mm": 2.0 + error,
        }

    rows = [row(f"s{i}", e, True) for i, e in enumerate([0.3, -0.01, 0.1, -0.9, 0.2])]
    rows += [row("n0", 0.5, False), row("n1", -0.05, False), row("u0", 0.0, None)]  # unknown plane: standard
    rows += [row("v0", 0.0, True, split="val"), row("p1", 0.0, True, phase="phase1")]
    rows.append({**row("m0", 0.0, True), "nt_recon_mm": None})  # not measurable: never chosen
    chosen = {(plane, rank): r["case_id"] for plane, rank, r in chosen_cases(rows)}
    assert chosen == {
        ("standard", "best"): "u0",
        ("standard", "median"): "s4",
        ("standard", "worst"): "s3",
        ("non-standard", "best"): "n1",
        ("non-standard", "median"): "n0",
        ("non-standard", "worst"): "n0",
    }
